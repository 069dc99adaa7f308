"""Run a configured DSPy optimiser: `optimizer.compiler` is a `_target_` to a DSPy teleprompter.

What varies between optimisers is data in their YAML, not branches here:
- `uses_valset: true` passes the dev split as `valset=`;
- `prompt_lm_arg: <name>` passes the separate prompt/teacher/reflection LM (`prompt_lm`, or the task
  LM when that is null) under the argument name that optimiser uses;
- `compile_args` go to `compile()` as they are;
- `finetune_step: w` names a strategy step that fine-tunes weights: if the strategy uses it and the
  LM's provider cannot fine-tune, the run stops before any optimisation is spent;
- `set_student_lm: true` sets the task LM on every predictor (BetterTogether needs it).
"""

from __future__ import annotations

import dspy
from hydra.utils import instantiate
from omegaconf import DictConfig

from .session import Session, named
from .stages import StageLog, raise_on_step_error


def build_optimizer(cfg: DictConfig, session: Session):
    opt = cfg.optimizer
    if opt.get("compiler") is None:
        return None
    kwargs = {}
    if opt.get("prompt_lm_arg"):
        kwargs[opt.prompt_lm_arg] = instantiate(cfg.prompt_lm) if cfg.get("prompt_lm") else session.lm
    optimizer = instantiate(opt.compiler, **kwargs)
    if getattr(optimizer, "metric", None) is not None:
        optimizer.metric = named(optimizer.metric)
    return optimizer


class FinetuningUnavailable(RuntimeError):  # noqa: N818
    pass


def check_finetuning(cfg: DictConfig, lm: dspy.LM) -> None:
    step = cfg.optimizer.get("finetune_step")
    strategy = str((cfg.optimizer.get("compile_args") or {}).get("strategy", ""))
    if not step or step not in [s.strip() for s in strategy.split("->")]:
        return
    provider = getattr(lm, "provider", None)
    if not getattr(provider, "finetunable", False):
        raise FinetuningUnavailable(
            f"optimizer={cfg.optimizer.name} strategy {strategy!r} has a weight step {step!r}, but LM {lm.model!r} "
            f"has no fine-tuning provider ({type(provider).__name__}). Use a prompts-only strategy "
            f"(optimizer.compile_args.strategy=p) or an LM whose provider can fine-tune (lm=local, lm=openai)."
        )
    check_ready = getattr(provider, "check_ready", None)  # ours: are torch/transformers/peft installed?
    if check_ready is not None:
        try:
            check_ready()
        except ImportError as exc:
            raise FinetuningUnavailable(
                f"optimizer={cfg.optimizer.name} strategy {strategy!r} fine-tunes {lm.model!r}, but {exc}"
            ) from exc


def compile_program(
    cfg: DictConfig,
    session: Session,
    program: dspy.Module,
    trainset: list,
    valset: list | None = None,
    stages: StageLog | None = None,
    raise_step_errors: bool = True,
) -> dspy.Module:
    """Compile `program`; `stages` (if given) records each step of a composite optimiser."""
    check_finetuning(cfg, session.lm)
    optimizer = build_optimizer(cfg, session)
    if optimizer is None:
        return program
    if cfg.optimizer.get("set_student_lm"):
        program.set_lm(session.lm)
    args = dict(instantiate(cfg.optimizer.get("compile_args") or {}))
    if cfg.optimizer.get("uses_valset") and valset:
        args["valset"] = valset
    stages = stages if stages is not None else StageLog()
    stages.watch(optimizer)
    with stages.catching_step_errors():
        compiled = optimizer.compile(program, trainset=trainset, **args)
    if raise_step_errors and cfg.optimizer.get("fail_on_step_error", True):
        raise_on_step_error(compiled, stages)
    return compiled
