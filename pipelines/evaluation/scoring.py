"""Score a program on examples with DSPy's `Evaluate`, keeping a per-example table.

Runs under MLflow's DSPy autolog (configured once per process by `pipelines.session`), so every example
leaves a trace with the metric's score attached as an assessment. The table has one row per example:
`row_id`, one column per input, `expected.<field>` and `predicted.<field>` per output, `score`,
`latency_s` and `error`. Nothing here knows a field name: they come from the examples and `outputs`.

    >>> outcome = evaluate_program(program, splits.examples("dev"), exact_match,
    ...                            outputs=["label"], ids=splits.ids("dev"), lm=lm)     # doctest: +SKIP
    >>> outcome.score, outcome.table.columns.tolist()                                   # doctest: +SKIP
    (0.75, ['row_id', 'text', 'expected.label', 'predicted.label', 'score', 'latency_s', 'error'])
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dspy
import mlflow
import numpy as np
import pandas as pd

from pipelines.evaluation.metrics import as_score
from pipelines.evaluation.stats import bootstrap_ci, macro_f1, statistic_ci
from pipelines.lm.usage import measure_usage


class EvaluationFailed(RuntimeError):
    pass


def expected_col(field_name: str) -> str:
    return f"expected.{field_name}"


def predicted_col(field_name: str) -> str:
    return f"predicted.{field_name}"


@dataclass
class EvalOutcome:
    score: float  # mean metric in [0, 1]
    table: pd.DataFrame
    usage: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    errors: int = 0
    label_sets: dict[str, list[str]] = field(default_factory=dict)  # output label fields: per-class metrics

    def ci(self, confidence: float = 0.95) -> tuple[float, float]:
        _, low, high = bootstrap_ci(self.table["score"], confidence=confidence)
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
        for name, labels in self.label_sets.items():
            tag = prefix if len(self.label_sets) == 1 else f"{prefix}_{name}"
            out.update(classification_metrics(self.table, name, labels, tag))
        return out

    def log(self, prefix: str) -> None:
        """Metrics as `<prefix>_score` etc. and the table as `eval/<prefix>_predictions.json` (a UI table)."""
        mlflow.log_metrics(self.metrics(prefix))
        mlflow.log_table(self.table, artifact_file=f"eval/{prefix}_predictions.json")


def classification_metrics(table: pd.DataFrame, name: str, labels: list[str], prefix: str) -> dict[str, float]:
    """Macro F1 of one label field (with a bootstrap interval) and accuracy per class."""

    def norm(value) -> str:  # as the shipped metrics compare: case and surrounding space ignored
        return str(value).strip().lower()

    codes = {norm(label): i for i, label in enumerate(labels)}
    wrong = len(labels)  # any answer outside the label set
    expected = np.array([codes.get(norm(v), wrong) for v in table[expected_col(name)]])
    predicted = np.array([codes.get(norm(v), wrong) for v in table[predicted_col(name)].fillna("")])
    f1, low, high = statistic_ci(functools.partial(macro_f1, n_classes=len(labels)), expected, predicted)
    out = {f"{prefix}_macro_f1": f1, f"{prefix}_macro_f1_ci95_low": low, f"{prefix}_macro_f1_ci95_high": high}
    for label, code in zip(labels, range(len(labels)), strict=True):
        mask = expected == code
        if mask.any():
            out[f"{prefix}_class_accuracy.{label}"] = float((predicted[mask] == code).mean())
    return out


def scored(metric: Callable) -> Callable:
    """`metric` returning a float in [0, 1] whatever it returns (bool, float, `dspy.Prediction(score=...)`),
    keeping its `__name__`: MLflow names the trace assessment after it."""

    @functools.wraps(metric)
    def score(example, prediction, trace=None):
        return as_score(metric(example, prediction, trace))

    return score


def evaluate_program(
    program: dspy.Module,
    examples: list[dspy.Example],
    metric: Callable,
    *,
    outputs: list[str],
    ids: list | None = None,
    lm: dspy.LM | None = None,
    adapter=None,
    num_threads: int = 1,
    display_progress: bool = False,
    label_sets: dict[str, list[str]] | None = None,
) -> EvalOutcome:
    """Score `program` on `examples`; `ids` (default 0..n-1) name the rows that pair results across models."""
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
        metric=scored(metric),
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

    ids = list(ids) if ids is not None else list(range(len(examples)))
    rows, errors = [], 0
    for row_id, (example, prediction, score) in zip(ids, result.results, strict=True):
        answered = prediction is not None and any(getattr(prediction, f, None) is not None for f in outputs)
        errors += not answered
        row = {"row_id": row_id, **example.inputs().toDict()}
        for f in outputs:
            row[expected_col(f)] = example.get(f)
            row[predicted_col(f)] = getattr(prediction, f, None) if prediction is not None else None
        row |= {
            "score": float(score) if score is not None else 0.0,
            "latency_s": getattr(prediction, "_latency_s", None),
            "error": None if answered else "no prediction (the program raised or returned no output)",
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    return EvalOutcome(
        score=float(table["score"].mean()) if len(table) else 0.0,  # DSPy's own figure is a rounded percentage
        table=table,
        usage=usage.summary(),
        wall_s=wall,
        errors=errors,
        label_sets={k: v for k, v in (label_sets or {}).items() if k in outputs},
    )


@dataclass(frozen=True)
class EvalSettings:
    num_threads: int = 1  # the embedded model serialises calls anyway; raise it for provider LMs
    display_progress: bool = False


def evaluate_split(
    program: dspy.Module, task, split: str, settings: EvalSettings, lm=None, adapter=None
) -> EvalOutcome:
    """`evaluate_program` on one split of a task (`pipelines.data.task.Task`), rows paired by `row_id`."""
    return evaluate_program(
        program,
        task.examples(split),
        task.metric,
        outputs=task.contract.output_names,
        ids=task.splits.ids(split),
        lm=lm,
        adapter=adapter,
        num_threads=settings.num_threads,
        display_progress=settings.display_progress,
        label_sets=task.output_label_sets,
    )
