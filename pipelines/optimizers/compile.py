"""Run a configured DSPy optimiser: the ONE place that builds and runs one.

`optimizer.compiler` is a `_target_` to a DSPy teleprompter; what varies between optimisers is data in
their YAML, not branches here:
- `uses_valset: true` passes the task's `val` split as `valset=` (never `dev`: that is the gate's evidence);
- `prompt_lm_arg: <name>` passes the separate prompt/teacher/reflection LM (`prompt_lm`, or the task
  LM when that is null) under the argument name that optimiser uses;
- `compile_args` go to `compile()` as they are;
- `finetune_step: w` names a strategy step that fine-tunes weights: if the strategy uses it and the
  LM's provider cannot fine-tune, the run stops before any optimisation is spent (an optimiser without a
  `strategy`, such as `supervised_lora`, is checked whenever it names one);
- `set_student_lm: true` sets the task LM on every predictor (BetterTogether needs it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dspy

from pipelines.data.task import named
from pipelines.optimizers.stages import StageLog, raise_on_step_error


@dataclass
class OptimizerSpec:
    name: str
    optimizer: Any | None = None  # a DSPy teleprompter; None: the program as written
    uses_valset: bool = False
    compile_args: dict[str, Any] = field(default_factory=dict)
    set_student_lm: bool = False
    finetune_step: str | None = None
    fail_on_step_error: bool = True

    @property
    def strategy_steps(self) -> list[str]:
        return [s.strip() for s in str(self.compile_args.get("strategy", "")).split("->") if s.strip()]


def build_optimizer(optimizer_cfg, lm: dspy.LM, prompt_lm: dspy.LM | None = None) -> OptimizerSpec:
    """The optimiser a config names, with the prompt LM under the argument name it takes."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    opt = optimizer_cfg
    optimizer = None
    if opt.get("compiler") is not None:
        kwargs = {opt.prompt_lm_arg: prompt_lm or lm} if opt.get("prompt_lm_arg") else {}
        optimizer = instantiate(opt.compiler, **kwargs)
        if getattr(optimizer, "metric", None) is not None:
            optimizer.metric = named(optimizer.metric)
    compile_args = opt.get("compile_args") or {}
    return OptimizerSpec(
        name=str(opt.name),
        optimizer=optimizer,
        uses_valset=bool(opt.get("uses_valset", False)),
        compile_args=dict(instantiate(compile_args)) if OmegaConf.is_config(compile_args) else dict(compile_args),
        set_student_lm=bool(opt.get("set_student_lm", False)),
        finetune_step=opt.get("finetune_step"),
        fail_on_step_error=bool(opt.get("fail_on_step_error", True)),
    )


class FinetuningUnavailable(RuntimeError):  # noqa: N818
    pass


def check_finetuning(spec: OptimizerSpec, lm: dspy.LM) -> None:
    """Refuse, before anything is spent, a weight step the LM's provider cannot run."""
    steps = spec.strategy_steps  # a composite optimiser's steps; none: the optimiser as a whole fine-tunes
    if not spec.finetune_step or (steps and spec.finetune_step not in steps):
        return
    strategy = spec.compile_args.get("strategy", spec.finetune_step)
    provider = getattr(lm, "provider", None)
    if not getattr(provider, "finetunable", False):
        raise FinetuningUnavailable(
            f"optimizer={spec.name} strategy {strategy!r} has a weight step {spec.finetune_step!r}, but LM "
            f"{lm.model!r} has no fine-tuning provider ({type(provider).__name__}). Use a prompts-only strategy "
            f"(optimizer.compile_args.strategy=p) or an LM whose provider can fine-tune (lm=local, lm=openai)."
        )
    check_ready = getattr(provider, "check_ready", None)  # ours: are torch/transformers/peft installed?
    if check_ready is not None:
        try:
            check_ready()
        except ImportError as exc:
            raise FinetuningUnavailable(
                f"optimizer={spec.name} strategy {strategy!r} fine-tunes {lm.model!r}, but {exc}"
            ) from exc


class SplitTooSmall(ValueError):
    pass


def check_split_sizes(spec: OptimizerSpec, n_train: int, n_val: int) -> None:
    """Refuse, before anything is spent, splits smaller than the optimiser's own mini-batches. DSPy checks
    these inside `compile`, after a baseline and the run's first LM calls have been paid for."""
    optimizer = spec.optimizer
    if isinstance(optimizer, dspy.SIMBA) and n_train < optimizer.bsize:
        raise SplitTooSmall(
            f"optimizer={spec.name}: the train split has {n_train} examples, fewer than SIMBA's mini-batch "
            f"(optimizer.compiler.bsize={optimizer.bsize}). Lower bsize or raise task.data.train_size."
        )
    if isinstance(optimizer, dspy.MIPROv2) and spec.uses_valset:
        minibatch = spec.compile_args.get("minibatch", True)
        size = spec.compile_args.get("minibatch_size", 35)
        if minibatch and n_val < size:
            raise SplitTooSmall(
                f"optimizer={spec.name}: the val split has {n_val} examples, fewer than MIPROv2's mini-batch "
                f"(optimizer.compile_args.minibatch_size={size}). Lower it, set minibatch=false, or raise "
                "task.data.val_size."
            )


def compile_program(
    spec: OptimizerSpec,
    program: dspy.Module,
    trainset: list,
    valset: list | None = None,
    *,
    lm: dspy.LM,
    stages: StageLog | None = None,
    raise_step_errors: bool = True,
) -> dspy.Module:
    """Compile `program` (returned as is when the spec has no optimiser); `stages` records composite steps."""
    check_finetuning(spec, lm)
    if spec.optimizer is None:
        return program
    if spec.set_student_lm:
        program.set_lm(lm)
    args = dict(spec.compile_args)
    if spec.uses_valset and valset:
        args["valset"] = valset
    stages = stages if stages is not None else StageLog()
    stages.watch(spec.optimizer)
    with stages.catching_step_errors():
        compiled = spec.optimizer.compile(program, trainset=trainset, **args)
    if raise_step_errors and spec.fail_on_step_error:
        raise_on_step_error(compiled, stages)
    return compiled
