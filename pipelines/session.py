"""Process-wide setup every entry point shares: DSPy's cache, MLflow autolog, the LM and adapter."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import dspy
import mlflow
from hydra.utils import instantiate
from omegaconf import DictConfig

from .config import to_container


@dataclass
class Session:
    lm: dspy.LM
    adapter: object | None


def start_session(cfg: DictConfig) -> Session:
    dspy.configure_cache(disk_cache_dir=str(cfg.paths.dspy_cache_dir))
    mlflow.dspy.autolog(**to_container(cfg.tracking.autolog))
    lm = instantiate(cfg.lm)
    adapter = instantiate(cfg.adapter) if cfg.get("adapter") else None
    dspy.configure(lm=lm, adapter=adapter)
    return Session(lm=lm, adapter=adapter)


def named(metric: Callable) -> Callable:
    """A `_partial_` metric with its function's `__name__`: MLflow names trace assessments after it."""
    if isinstance(metric, functools.partial):
        return functools.update_wrapper(metric, metric.func)
    return metric


def resolve_metric(metric_cfg: DictConfig) -> Callable:
    return named(instantiate(metric_cfg))
