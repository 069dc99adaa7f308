"""The one optimisation pipeline behind `train` and `optimize`: baseline, compile, score, in stages.

`train` is a preset of it (a quick optimiser, no baseline, scored on dev); `optimize` runs a search
optimiser and scores the baseline and the result on the same splits. Each stage logs its wall time,
LM calls, tokens and cost. A budget stops a compile cleanly and keeps the best program evaluated so far.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import dspy
import mlflow
from dspy.utils.exceptions import AdapterParseError

from pipelines.data.task import Task
from pipelines.evaluation.runner import CHECK_LM, EvalSettings, NoUsableAnswers, error_text, evaluate_split
from pipelines.lm.usage import count_requests, measure_usage
from pipelines.optimizers.budget import Budget, BudgetExceeded, BudgetGuard
from pipelines.optimizers.compile import OptimizerSpec, compile_program
from pipelines.optimizers.progress import log_trial_curve, recording
from pipelines.optimizers.stages import StageLog, log_stages, raise_on_step_error
from pipelines.tracking import metric_names as names

log = logging.getLogger(__name__)


@dataclass
class Optimized:
    program: dspy.Module
    scores: dict[str, float] = field(default_factory=dict)  # split -> score of the result
    baseline: dict[str, float] = field(default_factory=dict)  # split -> score of the program as written
    stopped_by_budget: str | None = None


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Log a line when a stage starts and ends, and its wall time as a metric."""
    log.info("[%s] started", name)
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    mlflow.log_metric(names.wall_s(name), elapsed)
    log.info("[%s] done in %.1fs", name, elapsed)


def score_splits(
    program, task: Task, splits: list[str], settings: EvalSettings, role: str = names.SCORE
) -> dict[str, float]:
    scores = {}
    for split in splits:
        outcome = evaluate_split(program, task, split, settings)
        outcome.log(split, role)
        scores[split] = outcome.score
        low, high = outcome.ci()
        log.info("%s %s: %.3f [%.3f, %.3f] (n=%d)", role, split, outcome.score, low, high, len(outcome.table))
    return scores


def compile_within_budget(
    spec: OptimizerSpec,
    program: dspy.Module,
    task: Task,
    *,
    lm: dspy.LM,
    budget: Budget,
    logging_scope=None,
    log_evals: bool = False,
) -> tuple[dspy.Module, str | None]:
    """Compile on train (valset: val) under the budget; on a budget stop return the best program seen so far.

    `log_evals`: each evaluation the optimiser runs becomes a named child run of the active run
    (`pipelines.optimizers.progress`); the best-so-far curve per trial is logged either way."""
    stages = StageLog()
    compiled, stopped = program, None
    active = mlflow.active_run()
    trainset, valset = task.examples("train"), task.examples("val")
    progress_scope = recording(
        active.info.run_id if active else None,
        spec.name,
        log_evals=log_evals,
        n_val=len(valset) if spec.uses_valset else None,
        n_train=len(trainset),
    )
    with (
        measure_usage() as usage,
        count_requests() as requests,
        logging_scope or nullcontext(),
        progress_scope as progress,
    ):
        guard = BudgetGuard(budget, usage, requests)
        requests.gate = guard.before_request  # checked as each request goes out, retries included
        try:
            with dspy.context(callbacks=[*dspy.settings.callbacks, guard]):
                compiled = compile_program(
                    spec,
                    program,
                    trainset,
                    valset,
                    lm=lm,
                    stages=stages,
                    raise_step_errors=False,
                )
        except BudgetExceeded as exc:
            stopped = str(exc)
            compiled = guard.best_program() or program
            log.warning("budget reached (%s): keeping the best program evaluated so far", stopped)
        except AdapterParseError as exc:  # an optimiser gives up on an LM after too many unparseable answers
            first = " ".join(error_text(exc).split())[:500]
            raise NoUsableAnswers(f"the optimiser stopped on answers that did not parse: {first}; {CHECK_LM}") from exc
        finally:
            guard.armed = False
    log_stages(compiled, stages)
    log_trial_curve(compiled, progress)
    # lm_calls: calls answered; lm_requests: requests sent, failed and retried ones included (what a budget bounds)
    spent = usage.summary() | {"lm_requests": requests.count}
    mlflow.log_metrics({names.compile_(k): v for k, v in spent.items()})
    mlflow.set_tag("stopped_by_budget", stopped or "false")
    if spec.fail_on_step_error:
        raise_on_step_error(compiled, stages)  # after logging: the run shows what happened, then FAILS
    return compiled, stopped


def optimize_program(
    program: dspy.Module,
    task: Task,
    spec: OptimizerSpec,
    *,
    lm: dspy.LM,
    report_splits: list[str],
    settings: EvalSettings,
    budget: Budget | None = None,
    baseline: bool = True,
    logging_scope=None,
    log_evals: bool = False,
) -> Optimized:
    """Baseline (optional), compile, then score the result on `report_splits`, all logged to the active run."""
    result = Optimized(program)
    if baseline:
        with stage("baseline"):
            result.baseline = score_splits(program, task, report_splits, settings, role=names.BASELINE)
    with stage("compile"):
        result.program, result.stopped_by_budget = compile_within_budget(
            spec,
            program,
            task,
            lm=lm,
            budget=budget or Budget(),
            logging_scope=logging_scope,
            log_evals=log_evals,
        )
    with stage("evaluate"):
        result.scores = score_splits(result.program, task, report_splits, settings)
    for split in result.baseline:
        mlflow.log_metric(names.gain(split), result.scores[split] - result.baseline[split])
    return result
