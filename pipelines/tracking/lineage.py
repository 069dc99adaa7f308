"""Lineage that carries settings: what a run recorded, read back by the runs that build on it.

`register` and `evaluate` score a model on the task and data settings its training run recorded
(`config.yaml`), unless the command line changes the task: a model trained on an 8-row dev split is
compared on those 8 rows, not silently on the default 60.
"""

from __future__ import annotations

from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient

# What changes a task's data: the task itself, a preset, and the values its config interpolates.
TASK_OVERRIDE_PREFIXES = ("task", "+task", "++task", "~task", "experiment", "+experiment", "seed", "paths")


def recorded_config(run_id: str) -> dict[str, Any]:
    """The resolved config a run logged as `config.yaml` (secrets already redacted there)."""
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    return yaml.safe_load(text) or {}


def source_run_id(model_uri: str) -> str | None:
    """The run that logged the model behind `runs:/ID/...`, `models:/NAME@alias`, `models:/NAME/N`, `models:/m-ID`."""
    from pipelines.registry.versions import resolve_version

    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/") :].split("/", 1)[0]
    version = resolve_version(model_uri)
    if version is not None:
        return version.run_id
    if model_uri.startswith("models:/m-"):
        return MlflowClient().get_logged_model(model_uri[len("models:/") :].split("/", 1)[0]).source_run_id
    return None


def task_overridden(overrides: list[str]) -> bool:
    """Did the command line choose or change the task (`task=`, `task.data.dev_size=`, `experiment=`, `seed=`)?"""
    return any(o.split("=", 1)[0].split(".", 1)[0].startswith(TASK_OVERRIDE_PREFIXES) for o in overrides)


def command_line_overrides() -> list[str]:
    """The Hydra overrides of the running entry point (empty when called as a library)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # HydraConfig not set: not under @hydra.main
        return []


def adopt_recorded_task(cfg, run_id: str | None) -> bool:
    """Replace `cfg.task` with the task settings `run_id` recorded, unless the command line changed the task.
    Returns whether it did."""
    from omegaconf import OmegaConf, open_dict

    if run_id is None or task_overridden(command_line_overrides()):
        return False
    task = recorded_config(run_id).get("task")
    if not task:
        return False
    with open_dict(cfg):
        cfg.task = OmegaConf.create(task)
    return True
