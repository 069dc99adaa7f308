"""`optimize`: compile a program with a DSPy optimiser and measure it against the unoptimised baseline.

    python -m pipelines.optimize                                   # MIPROv2 (auto=light)
    python -m pipelines.optimize optimizer=gepa budget.max_lm_calls=500
    python -m pipelines.optimize -m optimizer=miprov2,simba,gepa   # a sweep, compared in the parent run

Stages, each logged with its wall time, LM calls, tokens and cost: baseline (the program as written,
scored on every `report_splits` split), compile (under MLflow's DSPy autolog: per-step scores where the
optimiser exposes them), evaluate (the result on the same splits). The result is logged as a model
ready for `register`, and in readable form (`program/program.md`).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import dspy
import mlflow
from hydra.utils import instantiate
from omegaconf import DictConfig

from .budget import Budget, BudgetExceeded, BudgetGuard
from .cli import hydra_main
from .compile import check_finetuning, compile_program
from .config import to_container
from .evaluation import evaluate_split
from .model import build_spec, log_program_model
from .program_report import log_program
from .programs import build_program
from .session import resolve_metric, start_session
from .stages import StageLog, log_stages, raise_on_step_error
from .tracking import tracked_run
from .usage import measure_usage

log = logging.getLogger(__name__)


@dataclass
class OptimizeResult:
    run_id: str
    model_uri: str
    baseline: dict[str, float] = field(default_factory=dict)
    optimized: dict[str, float] = field(default_factory=dict)
    stopped_by_budget: str | None = None


@contextmanager
def stage(name: str):
    """Log a line when a stage starts and ends (with elapsed time), and its wall time as a metric."""
    log.info("[%s] started", name)
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    mlflow.log_metric(f"{name}_wall_s", elapsed)
    log.info("[%s] done in %.1fs", name, elapsed)


def run_compile(cfg: DictConfig, session, student: dspy.Module, splits) -> tuple[dspy.Module, str | None]:
    """Compile under autolog and the budget; on a budget stop return the best program seen so far."""
    autolog = to_container(cfg.tracking.autolog)
    budget = Budget(**to_container(cfg.budget))
    stages = StageLog()
    compiled, stopped = student, None
    with measure_usage() as usage:
        guard = BudgetGuard(budget, usage)
        mlflow.dspy.autolog(**autolog)  # compile/eval logging on for this stage only
        try:
            with dspy.context(callbacks=[*dspy.settings.callbacks, guard]):
                compiled = compile_program(
                    cfg, session, student, splits.train, splits.dev, stages=stages, raise_step_errors=False
                )
        except BudgetExceeded as exc:
            stopped = str(exc)
            compiled = guard.best_program() or student
            log.warning("budget reached (%s): keeping the best program evaluated so far", stopped)
        finally:
            guard.armed = False
            mlflow.dspy.autolog(**(autolog | {"log_compiles": False, "log_evals": False}))
    log_stages(compiled, stages)
    mlflow.log_metrics({f"compile_{k}": v for k, v in usage.summary().items()})
    mlflow.set_tag("stopped_by_budget", stopped or "false")
    if cfg.optimizer.get("fail_on_step_error", True):
        raise_on_step_error(compiled, stages)  # after logging: the run shows what happened, then FAILS
    return compiled, stopped


def optimize(cfg: DictConfig) -> OptimizeResult:
    session = start_session(cfg)
    # Autolog's compile/eval logging is switched on around the compile stage only, so the baseline
    # and final evaluations below do not add child runs.
    mlflow.dspy.autolog(**(to_container(cfg.tracking.autolog) | {"log_compiles": False, "log_evals": False}))
    with tracked_run(cfg, "optimize", run_name=cfg.run_name or f"optimize-{cfg.optimizer.name}") as run:
        check_finetuning(cfg, session.lm)  # before the baseline: nothing is spent on a run that cannot finish
        splits = instantiate(cfg.task.data)
        splits.log_to_mlflow()
        student = build_program(cfg.program, splits.labels)
        metric = resolve_metric(cfg.task.metric)

        def score_all(program, prefix: str) -> dict[str, float]:
            scores = {}
            for split in cfg.report_splits:
                outcome = evaluate_split(cfg, program, splits, split, metric)
                outcome.log(f"{prefix}{split}")
                scores[split] = outcome.score
                log.info("%s%s score: %.3f", prefix, split, outcome.score)
            return scores

        with stage("baseline"):
            baseline = score_all(student, "baseline_")
        with stage("compile"):
            compiled, stopped = run_compile(cfg, session, student, splits)
        with stage("evaluate"):
            optimized = score_all(compiled, "")
        for split in cfg.report_splits:
            mlflow.log_metric(f"{split}_gain", optimized[split] - baseline[split])

        log_program(compiled)
        spec = build_spec(cfg, splits.labels, compiled, num_threads=cfg.eval.num_threads)
        example = splits.frames[cfg.report_splits[0]][spec["inputs"]].head(2)
        model_uri = log_program_model(compiled, spec, input_example=example)
        mlflow.set_tag("model_uri", model_uri)
        return OptimizeResult(run.info.run_id, model_uri, baseline, optimized, stopped)


@hydra_main("optimize")
def main(cfg: DictConfig) -> float:
    return optimize(cfg).optimized[cfg.report_splits[-1]]


if __name__ == "__main__":
    main()
