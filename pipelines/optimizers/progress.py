"""An optimiser's progress as MLflow shows it: each evaluation a child run of the optimise run, and a best-so-far curve.

MLflow's DSPy autolog (`log_evals`) starts a child run per `dspy.Evaluate` with `mlflow.start_run(nested=True)`,
which finds its parent in the *calling thread's* active run: an evaluation started from a worker thread, or
after the run stack was left elsewhere, lands at the top of the experiment with no parent, named only
`eval_full_3`. `EvalRuns` replaces that logging for the compile stage: it creates each child run through
`MlflowClient` with the optimise run as its explicit parent (any thread), and names it for what it is:

    miprov2: full eval 3         (MIPROv2 scoring a candidate on the whole val split)
    miprov2: minibatch eval 12   (one Optuna trial on a mini-batch)
    gepa: full eval 0            (GEPA scoring a candidate on its valset)

After the compile, `log_trial_curve` logs `compile/trial_score` and `compile/best_score` (the best so far) with
step = trial, from what each optimiser records: MIPROv2's `trial_logs` (full evaluations by trial number),
GEPA's `detailed_results` (each candidate's valset score, in discovery order), SIMBA's per-step mini-batch
scores (it runs no `Evaluate` and keeps none: read from its log line as each step ends).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from contextlib import contextmanager
from typing import Any

import mlflow
from dspy.utils.callback import BaseCallback

TRIAL_SCORE, BEST_SCORE = "compile/trial_score", "compile/best_score"
EVAL_KINDS = {
    "eval_full": "full eval",
    "eval_minibatch": "minibatch eval",
    "eval_train": "trainset eval",
    "eval": "eval",
}
_SIMBA_STEP = re.compile(r"Scores after (\d+) batches: \[(.*?)\], Best: ([-\d.eE]+)")


def _fraction(score: float | None) -> float | None:
    """dspy.Evaluate reports percent; our metrics (and every other score in the run) are fractions."""
    return None if score is None else float(score) / 100.0


class EvalRuns(BaseCallback):
    """A DSPy callback: each `Evaluate` inside a compile becomes a named child run of `parent_run_id`."""

    def __init__(self, parent_run_id: str, optimizer: str, n_val: int | None = None, n_train: int | None = None):
        self.parent, self.optimizer = parent_run_id, optimizer
        self.n_val, self.n_train = n_val, n_train
        self.client = mlflow.MlflowClient()
        self.experiment_id = self.client.get_run(parent_run_id).info.experiment_id
        self.counts: dict[str, int] = defaultdict(int)
        self.open: dict[str, tuple[str, str, int]] = {}  # call id -> (child run id, kind, index)
        self.full_scores: list[float] = []  # full evaluations' scores, in order
        self._lock = threading.Lock()

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        # MIPROv2 passes the metadata with the call, GEPA to Evaluate's constructor.
        metadata = inputs.get("callback_metadata") or getattr(instance, "callback_metadata", None) or {}
        if metadata.get("disable_logging"):  # GEPA's reflection mini-batches: dozens of 3-row evaluations
            return
        devset = inputs.get("devset") or getattr(instance, "devset", None) or []
        kind = metadata.get("metric_key") or self._kind_by_size(len(devset))
        with self._lock:
            index = self.counts[kind]
            self.counts[kind] += 1
        label = EVAL_KINDS.get(kind, kind.replace("_", " "))
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.optimizer}: {label} {index}",
            tags={
                "mlflow.parentRunId": self.parent,
                "entry_point": "optimizer_eval",
                "optimizer": self.optimizer,
                "eval_kind": kind,
                "eval_index": str(index),
            },
        )
        self.client.log_metric(run.info.run_id, "eval/examples", float(len(devset)))
        with self._lock:
            self.open[call_id] = (run.info.run_id, kind, index)

    def _kind_by_size(self, rows: int) -> str:
        """What an evaluation without DSPy's `metric_key` is, from its size (GEPA's metadata goes to Evaluate's
        constructor, which drops it in DSPy 3.4): the whole val split, the whole train split, or a part."""
        if rows and rows == self.n_val:
            return "eval_full"
        if rows and rows == self.n_train:
            return "eval_train"
        return "eval"

    def on_evaluate_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        with self._lock:
            entry = self.open.pop(call_id, None)
        if entry is None:
            return
        run_id, kind, index = entry
        if exception is not None:
            self.client.set_tag(run_id, "error", f"{type(exception).__name__}: {exception}"[:5000])
            self.client.set_terminated(run_id, "FAILED")
            return
        score = getattr(outputs, "score", outputs[0] if isinstance(outputs, tuple) else outputs)
        score = _fraction(score) if isinstance(score, int | float) else None
        if score is not None:
            self.client.log_metric(run_id, "eval/score", score)
            self.client.log_metric(self.parent, f"compile/{kind}", score, step=index)
            if kind == "eval_full":
                with self._lock:
                    self.full_scores.append(score)
        self.client.set_terminated(run_id, "FINISHED")


class _SimbaSteps(logging.Handler):
    """SIMBA's end-of-step line ("Scores after N batches: [...], Best: x") as (step, best mini-batch score)."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.steps: list[tuple[int, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _SIMBA_STEP.search(record.getMessage())
        if match:
            self.steps.append((int(match.group(1)), float(match.group(3))))


@contextmanager
def recording(
    parent_run_id: str | None,
    optimizer: str,
    log_evals: bool = True,
    n_val: int | None = None,
    n_train: int | None = None,
):
    """For the duration of a compile: named child runs per evaluation (when `log_evals`), SIMBA's steps
    collected. Yields a `Progress` to hand to `log_trial_curve` once the compile has returned."""
    import dspy

    progress = Progress()
    callbacks = list(dspy.settings.callbacks)
    if log_evals and parent_run_id:
        progress.eval_runs = EvalRuns(parent_run_id, optimizer, n_val=n_val, n_train=n_train)
        callbacks.append(progress.eval_runs)
    logger = logging.getLogger("dspy.teleprompt.simba")
    handler, level = _SimbaSteps(), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    progress.simba_steps = handler.steps
    try:
        with dspy.context(callbacks=callbacks):
            yield progress
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Progress:
    eval_runs: EvalRuns | None = None
    simba_steps: list[tuple[int, float]]

    def __init__(self):
        self.simba_steps = []


def trial_scores(compiled, progress: Progress | None = None) -> list[tuple[int, float]]:
    """(trial, score) in trial order, from what the optimiser kept on its result; [] when it kept nothing."""
    trial_logs = getattr(compiled, "trial_logs", None)
    if isinstance(trial_logs, dict) and any("full_eval_score" in (v or {}) for v in trial_logs.values()):
        # MIPROv2: trial 1 is the unoptimised program's full evaluation, then one every few trials.
        return sorted(
            (int(t), _fraction(v["full_eval_score"])) for t, v in trial_logs.items() if "full_eval_score" in (v or {})
        )
    detailed = getattr(compiled, "detailed_results", None)
    if detailed is not None and getattr(detailed, "val_aggregate_scores", None):
        return [(i, float(s)) for i, s in enumerate(detailed.val_aggregate_scores)]  # GEPA: candidate i, fractions
    if progress is not None and progress.simba_steps:
        return sorted(progress.simba_steps)  # SIMBA: step n's best new candidate on its mini-batch
    return []


def best_so_far(scores: list[tuple[int, float]]) -> list[tuple[int, float]]:
    best, curve = float("-inf"), []
    for step, score in scores:
        best = max(best, score)
        curve.append((step, best))
    return curve


def log_trial_curve(compiled, progress: Progress | None = None) -> list[tuple[int, float]]:
    """Log `compile/trial_score` and `compile/best_score` (step = trial) to the active run; returns the curve."""
    scores = trial_scores(compiled, progress)
    curve = best_so_far(scores)
    for (step, score), (_, best) in zip(scores, curve, strict=True):
        mlflow.log_metric(TRIAL_SCORE, score, step=step)
        mlflow.log_metric(BEST_SCORE, best, step=step)
    return curve
