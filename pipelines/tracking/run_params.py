"""A run's config: the resolved config (secrets redacted) as `config.yaml`, its headline knobs as params."""

from __future__ import annotations

from typing import Any

import mlflow
from omegaconf import OmegaConf

from pipelines.config import flatten, redact

MAX_PARAM_CHARS = 6000  # MLflow's limit for one param value


# The knobs a reader compares runs by; everything else stays in the `config.yaml` artifact.
HEADLINE_PARAMS = (
    "seed",
    "task.name",
    "task.data.labels",
    "task.data.train_size",
    "task.data.val_size",
    "task.data.dev_size",
    "task.data.test_size",
    "program._target_",
    "lm.model",
    "lm.temperature",
    "lm.max_tokens",
    "prompt_lm.model",
    "eval.split",
    "guard.name",
)
OPTIMIZING_ENTRIES = ("train", "optimize")


def headline_params(config: dict[str, Any], entry: str | None = None) -> dict[str, str]:
    """The few params worth a column: task and split sizes, program, LM, seed, and, for a run that optimises,
    the optimiser with its own settings (its `compiler` and `compile_args`, metric and targets left out)."""
    flat = flatten(config)
    keys = list(HEADLINE_PARAMS)
    if entry in OPTIMIZING_ENTRIES or entry is None:
        keys.append("optimizer.name")
        keys += [
            k
            for k in flat
            if k.startswith(("optimizer.compiler.", "optimizer.compile_args."))
            and not k.endswith(("_target_", ".metric", "_partial_"))
            and ".metric." not in k
        ]
        keys += [k for k in flat if k.startswith("budget.") and flat[k] is not None]
    return {k: str(flat[k])[:MAX_PARAM_CHARS] for k in keys if k in flat and flat[k] is not None}


def log_config(config: dict[str, Any], entry: str | None = None) -> None:
    """The resolved config (secrets redacted) as `config.yaml`, and its headline knobs as params."""
    resolved = redact(config)
    mlflow.log_text(OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
    mlflow.log_params(headline_params(resolved, entry))
