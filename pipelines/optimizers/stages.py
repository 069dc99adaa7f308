"""Per-step record of a composite optimiser (BetterTogether's `p -> w -> p`): time, score, failures.

BetterTogether scores the program on the valset after every step (`candidate_programs`, each with its
`strategy` prefix) but keeps no times, and when a step raises it logs the error and returns the best
program so far with `flag_compilation_error_occurred` set. We time each step by wrapping the step
optimisers' `compile` (BetterTogether reads their signature, which `functools.wraps` keeps), catch
the swallowed error from its logger, and log all of it to the run, so a weight step that did not
happen can never pass for one that did.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow


class CompileStepFailed(RuntimeError):
    pass


@dataclass
class StageLog:
    steps: list[dict] = field(default_factory=list)  # {"step", "optimizer", "seconds"} in run order
    errors: list[str] = field(default_factory=list)

    def watch(self, optimizer) -> None:
        """Time every step optimiser of a composite optimiser (no-op for a plain one)."""
        for key, step in (getattr(optimizer, "optimizers", None) or {}).items():
            step.compile = self._timed(key, step, step.compile)

    def _timed(self, key, step, original):
        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.steps.append(
                    {"step": key, "optimizer": type(step).__name__, "seconds": time.perf_counter() - start}
                )

        return timed

    @contextmanager
    def catching_step_errors(self, logger_name: str = "dspy.teleprompt.bettertogether"):
        handler = _ErrorCollector(self.errors)
        logger = logging.getLogger(logger_name)
        logger.addHandler(handler)
        try:
            yield self
        finally:
            logger.removeHandler(handler)


class _ErrorCollector(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(level=logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            cause = exc.__cause__ or exc
            self.sink.append(f"{type(cause).__name__}: {cause}")


def stage_table(compiled, stages: StageLog) -> list[dict]:
    """One row per strategy prefix, in run order: strategy, optimiser, valset score, seconds."""
    candidates = getattr(compiled, "candidate_programs", None) or []
    # dspy.Evaluate scores in percent; our metrics are fractions.
    by_strategy = {
        c.get("strategy", ""): (c["score"] / 100 if c.get("score") is not None else None)
        for c in candidates
        if isinstance(c, dict)
    }
    rows = [
        {"strategy": "", "step": "baseline", "optimizer": None, "valset_score": by_strategy.get(""), "seconds": None}
    ]
    prefix: list[str] = []
    for step in stages.steps:
        prefix.append(step["step"])
        strategy = " -> ".join(prefix)
        rows.append(step | {"strategy": strategy, "valset_score": by_strategy.get(strategy)})
    return rows


def log_stages(compiled, stages: StageLog) -> list[dict]:
    """Log the step table (metrics with step = position in the strategy, and a JSON artifact)."""
    if not stages.steps:
        return []
    rows = stage_table(compiled, stages)
    for i, row in enumerate(rows):
        if row["valset_score"] is not None:
            mlflow.log_metric("compile/stage_valset_score", float(row["valset_score"]), step=i)
        if row["seconds"] is not None:
            mlflow.log_metric("compile/stage_wall_s", row["seconds"], step=i)  # the step table has each one named
    flagged = bool(getattr(compiled, "flag_compilation_error_occurred", False))
    mlflow.set_tag("compile_step_error", "; ".join(stages.errors) if flagged or stages.errors else "false")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stages.json"
        path.write_text(json.dumps({"stages": rows, "errors": stages.errors, "flagged": flagged}, indent=2))
        mlflow.log_artifact(str(path), "compile")
    return rows


def raise_on_step_error(compiled, stages: StageLog) -> None:
    if getattr(compiled, "flag_compilation_error_occurred", False) or stages.errors:
        reason = "; ".join(stages.errors) or "see the run's log"
        raise CompileStepFailed(
            f"An optimiser step failed and the optimiser fell back to the best program before it: {reason}. "
            "Set optimizer.fail_on_step_error=false to keep that program instead."
        )
