"""Run a configured DSPy optimiser: `optimizer.compiler` is a `_target_` to a DSPy teleprompter.

What varies between optimisers is data in their YAML, not branches here:
- `uses_valset: true` passes the dev split as `valset=`;
- `prompt_lm_arg: <name>` passes the separate prompt/teacher/reflection LM (`prompt_lm`, or the task
  LM when that is null) under the argument name that optimiser uses;
- `compile_args` go to `compile()` as they are.
"""

from __future__ import annotations

import functools

import dspy
from hydra.utils import instantiate
from omegaconf import DictConfig

from .session import Session


def build_optimizer(cfg: DictConfig, session: Session):
    opt = cfg.optimizer
    if opt.get("compiler") is None:
        return None
    kwargs = {}
    if opt.get("prompt_lm_arg"):
        kwargs[opt.prompt_lm_arg] = instantiate(cfg.prompt_lm) if cfg.get("prompt_lm") else session.lm
    optimizer = instantiate(opt.compiler, **kwargs)
    metric = getattr(optimizer, "metric", None)
    if isinstance(metric, functools.partial):
        # MLflow names the assessments it attaches to traces after `metric.__name__`.
        optimizer.metric = functools.update_wrapper(metric, metric.func)
    return optimizer


def compile_program(
    cfg: DictConfig, session: Session, program: dspy.Module, trainset: list, valset: list | None = None
) -> dspy.Module:
    optimizer = build_optimizer(cfg, session)
    if optimizer is None:
        return program
    args = dict(instantiate(cfg.optimizer.get("compile_args") or {}))
    if cfg.optimizer.get("uses_valset") and valset:
        args["valset"] = valset
    return optimizer.compile(program, trainset=trainset, **args)
