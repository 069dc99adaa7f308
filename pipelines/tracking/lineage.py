"""Lineage that carries settings: what a run recorded, read back by the runs that build on it.

`register` and `evaluate` score a model on the task and data settings its training run recorded
(`config.yaml`), unless the command line changes the task: a model trained on an 8-row dev split is
compared on those 8 rows, not silently on the default 60.
"""

from __future__ import annotations

from typing import Any

import mlflow
import yaml

# What changes a task's data: the task itself, a preset, and the values its config interpolates.
TASK_OVERRIDE_PREFIXES = ("task", "+task", "++task", "~task", "experiment", "+experiment", "seed", "paths")


def recorded_config(run_id: str) -> dict[str, Any]:
    """The resolved config a run logged as `config.yaml` (secrets already redacted there)."""
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    return yaml.safe_load(text) or {}


def task_overridden(overrides: list[str]) -> bool:
    """Did the command line choose or change the task (`task=`, `task.data.dev_size=`, `experiment=`, `seed=`)?"""
    return any(o.split("=", 1)[0].split(".", 1)[0].startswith(TASK_OVERRIDE_PREFIXES) for o in overrides)


def recorded_task(run_id: str | None, overrides: list[str]) -> dict[str, Any] | None:
    """The task settings `run_id` recorded, unless the command line (`overrides`) changed the task."""
    if run_id is None or task_overridden(overrides):
        return None
    return recorded_config(run_id).get("task") or None
