"""Score a program on a split with DSPy's `Evaluate`, keeping a per-example table.

Runs under MLflow's DSPy autolog (see `pipelines.tracking`), so every example leaves a trace with the
metric's score attached as an assessment. The table has one row per example: inputs, expected,
predicted, correct, latency.

    >>> outcome = evaluate_program(program, splits.dev, exact_match, lm=lm)    # doctest: +SKIP
    >>> outcome.score, outcome.table.columns.tolist()                           # doctest: +SKIP
    (0.75, ['text', 'expected', 'predicted', 'correct', 'latency_s'])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dspy
import mlflow
import numpy as np
import pandas as pd

from .stats import bootstrap_ci
from .usage import measure_usage


class EvaluationFailed(RuntimeError):
    pass


@dataclass
class EvalOutcome:
    score: float  # mean metric in [0, 1]
    table: pd.DataFrame
    usage: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    errors: int = 0
    labels: list[str] | None = None  # classification: adds macro F1 and per-class accuracy

    def ci(self, confidence: float = 0.95) -> tuple[float, float]:
        _, low, high = bootstrap_ci(self.table["correct"], confidence=confidence)
        return low, high

    def metrics(self, prefix: str) -> dict[str, float]:
        lat = self.table["latency_s"].dropna()
        low, high = self.ci()
        out = {
            f"{prefix}_score": self.score,
            f"{prefix}_score_ci95_low": low,  # bootstrap over examples
            f"{prefix}_score_ci95_high": high,
            f"{prefix}_examples": float(len(self.table)),
            f"{prefix}_errors": float(self.errors),
            f"{prefix}_wall_s": self.wall_s,
        }
        if len(lat):
            out[f"{prefix}_latency_p50_s"] = float(lat.median())
            out[f"{prefix}_latency_p95_s"] = float(lat.quantile(0.95))
            out[f"{prefix}_latency_p99_s"] = float(lat.quantile(0.99))
        out.update({f"{prefix}_{k}": float(v) for k, v in self.usage.items()})
        if self.labels:
            out.update(classification_metrics(self.table, self.labels, prefix))
        return out

    def log(self, prefix: str) -> None:
        """Metrics as `<prefix>_score` etc. and the table as `<prefix>_predictions.json` (a UI table)."""
        mlflow.log_metrics(self.metrics(prefix))
        mlflow.log_table(self.table, artifact_file=f"eval/{prefix}_predictions.json")


def classification_metrics(table: pd.DataFrame, labels: list[str], prefix: str) -> dict[str, float]:
    """Macro F1 (with a bootstrap interval) and accuracy per class."""
    from sklearn.metrics import f1_score

    expected = table["expected"].astype(str).to_numpy()
    predicted = table["predicted"].fillna("").astype(str).to_numpy()

    def macro_f1(idx) -> float:
        return float(f1_score(expected[idx], predicted[idx], labels=labels, average="macro", zero_division=0))

    rng = np.random.default_rng(0)
    everything = np.arange(len(table))
    resamples = [macro_f1(rng.integers(0, len(table), len(table))) for _ in range(500)]
    out = {
        f"{prefix}_macro_f1": macro_f1(everything),
        f"{prefix}_macro_f1_ci95_low": float(np.quantile(resamples, 0.025)),
        f"{prefix}_macro_f1_ci95_high": float(np.quantile(resamples, 0.975)),
    }
    for label in labels:
        mask = expected == label
        if mask.any():
            out[f"{prefix}_class_accuracy.{label}"] = float((predicted[mask] == label).mean())
    return out


def evaluate_program(
    program: dspy.Module,
    examples: list[dspy.Example],
    metric: Callable,
    lm: dspy.LM | None = None,
    adapter=None,
    num_threads: int = 1,
    target: str = "label",
    display_progress: bool = True,
    labels: list[str] | None = None,
) -> EvalOutcome:
    errors_seen: list[BaseException] = []

    def timed(**inputs):
        start = time.perf_counter()
        try:
            prediction = program(**inputs)
        except Exception as exc:
            errors_seen.append(exc)  # DSPy's executor reports only "cancelled due to errors" at the end
            raise
        prediction._latency_s = time.perf_counter() - start  # underscore: not an output field
        return prediction

    evaluator = dspy.Evaluate(
        devset=examples,
        metric=metric,
        num_threads=num_threads,
        display_progress=display_progress,
        provide_traceback=True,
    )
    overrides = {k: v for k, v in {"lm": lm, "adapter": adapter}.items() if v is not None}
    start = time.perf_counter()
    with dspy.context(**overrides), measure_usage() as usage:
        try:
            result = evaluator(timed)
        except Exception as exc:
            if not errors_seen:
                raise
            first = errors_seen[0]
            raise EvaluationFailed(
                f"evaluation stopped after {len(errors_seen)} failed examples; first error: "
                f"{type(first).__name__}: {first}"
            ) from exc
    wall = time.perf_counter() - start

    rows, errors = [], 0
    for example, prediction, score in result.results:
        predicted = getattr(prediction, target, None) if prediction is not None else None
        errors += predicted is None
        rows.append(
            {
                **example.inputs().toDict(),
                "expected": example.get(target),
                "predicted": predicted,
                "correct": float(score) if score is not None else 0.0,
                "latency_s": getattr(prediction, "_latency_s", None),
            }
        )
    return EvalOutcome(
        score=float(result.score) / 100.0,  # DSPy reports a percentage
        table=pd.DataFrame(rows),
        usage=usage.summary(),
        wall_s=wall,
        errors=errors,
        labels=labels,
    )


def evaluate_split(
    cfg, program: dspy.Module, splits, split: str, metric: Callable, lm=None, adapter=None
) -> EvalOutcome:
    """`evaluate_program` on one split of a task's data, with the run's evaluation settings (`cfg.eval`)."""
    return evaluate_program(
        program,
        splits.examples(split),
        metric,
        lm=lm,
        adapter=adapter,
        num_threads=cfg.eval.num_threads,
        target=splits.target,
        labels=splits.labels,
        display_progress=cfg.eval.display_progress,
    )
