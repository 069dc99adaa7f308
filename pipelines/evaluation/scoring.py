"""Score a program on examples with DSPy's `Evaluate`, keeping a per-example table.

Runs under MLflow's DSPy autolog (configured once per process by `pipelines.session`), so every example
leaves a trace with the metric's score attached as an assessment. The table has one row per example:
`row_id`, one column per input, `expected.<field>` and `predicted.<field>` per output, `score`,
`latency_s` and `error`. Nothing here knows a field name: they come from the examples and `outputs`.

Failure is not a wrong answer. A row whose program (or metric) raised, an LM that timed out or refused
say, gets its `error` (type and message, API keys scrubbed) and NO score: it is left out of the mean, the
interval and the per-class metrics, instead of counting as 0. If more than `max_error_rate` of the rows
fail, the evaluation raises `EvaluationFailed` naming the first error, so the run FAILS before any model
is logged; with the default 0.0 one failed row is enough. Once the limit is crossed nothing more is sent:
DSPy's `Evaluate` stops at `max_errors` failures, set one past what our limit allows, and an example after
the limit is refused before its program runs. An answer the adapter cannot parse (`AdapterParseError`)
is the model's wrong answer, not a failure: it scores 0 and its prediction is empty.

Guards (`guard=` group, `pipelines.guards`) wrap the program when `EvalSettings.guards` holds any: inputs
are checked before it runs, outputs after, as the served model does. The table then has a `guard` column
(the row's hits, `name:action KIND`) and `refused_by`. A refused row is NOT a failure: it is the guarded
model's deliberate answer, so it scores 0 (the user got no answer) with no `error`, and does not count
against `max_error_rate`; the promotion gate, which refuses tables holding errors, can still compare.
Comparable: input guards depend on the inputs alone, so two models under the same guards are refused on
the same rows (a concordant pair, which McNemar's test ignores); an output refusal counts against the
model that wrote it. Hits are run metrics `<split>/guard/<name>/hits` (and `/refused`).

    >>> outcome = evaluate_program(program, splits.examples("dev"), exact_match,
    ...                            outputs=["label"], ids=splits.ids("dev"), lm=lm)     # doctest: +SKIP
    >>> outcome.score, outcome.table.columns.tolist()                                   # doctest: +SKIP
    (0.75, ['row_id', 'text', 'expected.label', 'predicted.label', 'score', 'latency_s', 'error'])
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dspy
import mlflow
import numpy as np
import pandas as pd
from dspy.utils.exceptions import AdapterParseError

from pipelines.evaluation.metrics import as_score
from pipelines.evaluation.stats import bootstrap_ci, macro_f1, statistic_ci
from pipelines.guards import Guarded, GuardRefused, GuardSet, hit_labels
from pipelines.lm.secrets import scrub, scrub_exception
from pipelines.lm.usage import measure_usage
from pipelines.tracking import metric_names as names


class EvaluationFailed(RuntimeError):
    """More rows failed than the configured error rate allows: the scores would not be the model's."""


def expected_col(field_name: str) -> str:
    return f"expected.{field_name}"


def predicted_col(field_name: str) -> str:
    return f"predicted.{field_name}"


@dataclass
class EvalOutcome:
    score: float  # mean metric in [0, 1] over the rows that did not fail (NaN if none)
    table: pd.DataFrame
    usage: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    errors: int = 0
    label_sets: dict[str, list[str]] = field(default_factory=dict)  # output label fields: per-class metrics
    trace_ids: list[str | None] = field(default_factory=list)  # per row, its MLflow trace (None: not traced)

    def ci(self, confidence: float = 0.95) -> tuple[float, float]:
        _, low, high = bootstrap_ci(self.table["score"].dropna(), confidence=confidence)  # failed rows: no score
        return low, high

    def metrics(self, split: str, role: str = names.SCORE) -> dict[str, float]:
        """The headline `score/<split>` with its interval, and `<split>/<detail>` (see `metric_names`)."""

        def d(what: str) -> str:
            return names.detail(split, what, role)

        lat = self.table["latency_s"].dropna()
        low, high = self.ci()
        out = {
            names.score(split, role): self.score,
            names.ci_low(split, role): low,  # bootstrap over examples
            names.ci_high(split, role): high,
            d("examples"): float(len(self.table)),
            d("errors"): float(self.errors),
            d("wall_s"): self.wall_s,
        }
        if len(lat):
            out[d("latency_p50_s")] = float(lat.median())
            out[d("latency_p95_s")] = float(lat.quantile(0.95))
            out[d("latency_p99_s")] = float(lat.quantile(0.99))
        out.update({d(k): float(v) for k, v in self.usage.items()})
        out.update({d(k): v for k, v in guard_metrics(self.table).items()})
        answered = self.table[self.table["error"].isna()]  # a failed row is no evidence about any class
        for name, labels in self.label_sets.items():
            f1, f1_low, f1_high = macro_f1_ci(answered, name, labels)
            field = "" if len(self.label_sets) == 1 else f"{name}/"
            out |= {
                d(f"{field}macro_f1"): f1,
                d(f"{field}macro_f1/ci_low"): f1_low,
                d(f"{field}macro_f1/ci_high"): f1_high,
            }
        return out

    def per_class(self) -> pd.DataFrame:
        """Accuracy per class of each label field (a table: one row per field and label), answered rows only."""
        answered = self.table[self.table["error"].isna()]
        rows = [row for name, labels in self.label_sets.items() for row in class_accuracy(answered, name, labels)]
        return pd.DataFrame(rows, columns=["field", "label", "examples", "accuracy"])

    def log(self, split: str, role: str = names.SCORE) -> None:
        """Metrics (`score/<split>` ...), the per-example table `eval/<split>_predictions.json` and, for label
        outputs, `eval/<split>_per_class.json`: tables the UI shows, in place of a scalar metric per class."""
        stem = split if role == names.SCORE else f"{role}_{split}"
        mlflow.log_metrics(self.metrics(split, role))
        mlflow.log_table(self.table, artifact_file=f"eval/{stem}_predictions.json")
        if self.label_sets:
            mlflow.log_table(self.per_class(), artifact_file=f"eval/{stem}_per_class.json")


def _codes(table: pd.DataFrame, name: str, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Expected and predicted labels as class codes (any answer outside the label set: one more code)."""

    def norm(value) -> str:  # as the shipped metrics compare: case and surrounding space ignored
        return str(value).strip().lower()

    codes = {norm(label): i for i, label in enumerate(labels)}
    wrong = len(labels)
    expected = np.array([codes.get(norm(v), wrong) for v in table[expected_col(name)]])
    predicted = np.array([codes.get(norm(v), wrong) for v in table[predicted_col(name)].fillna("")])
    return expected, predicted


def macro_f1_ci(table: pd.DataFrame, name: str, labels: list[str]) -> tuple[float, float, float]:
    """Macro F1 of one label field, with its 95% bootstrap interval."""
    expected, predicted = _codes(table, name, labels)
    return statistic_ci(functools.partial(macro_f1, n_classes=len(labels)), expected, predicted)


def class_accuracy(table: pd.DataFrame, name: str, labels: list[str]) -> list[dict]:
    expected, predicted = _codes(table, name, labels)
    return [
        {
            "field": name,
            "label": label,
            "examples": int(mask.sum()),
            "accuracy": float((predicted[mask] == code).mean()),
        }
        for code, label in enumerate(labels)
        if (mask := expected == code).any()
    ]


def guard_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Per guard: rows it hit and rows it refused, from the table's `guard`/`refused_by` columns (if any)."""
    if "guard" not in table:
        return {}
    hits: dict[str, float] = {}
    for labels in table["guard"].dropna():
        for name in {label.split(":")[0] for label in labels.split("; ")}:
            hits[name] = hits.get(name, 0.0) + 1
    out = {f"guard/{name}/hits": n for name, n in hits.items()}
    for name, n in table["refused_by"].dropna().value_counts().items():
        out[f"guard/{name}/refused"] = float(n)
    out["refused"] = float(table["refused_by"].notna().sum())
    return out


def scored(metric: Callable) -> Callable:
    """`metric` returning a float in [0, 1] whatever it returns (bool, float, `dspy.Prediction(score=...)`),
    keeping its `__name__`: MLflow names the trace assessment after it."""

    @functools.wraps(metric)
    def score(example, prediction, trace=None):
        return as_score(metric(example, prediction, trace))

    return score


def _key(inputs: dict) -> tuple:
    """Identifies an example by its inputs: DSPy hands the program inputs, never the example's position."""
    return tuple(sorted((k, repr(v)) for k, v in inputs.items()))


def error_text(exc: BaseException, limit: int = 2000) -> str:
    """`Type: message`, API keys scrubbed, cut to `limit` characters (a provider may return a whole page)."""
    return scrub(f"{type(exc).__name__}: {exc}")[:limit]


def allowed_errors(n: int, max_error_rate: float) -> int:
    """How many of `n` rows may fail: error rate = failed / n must not exceed `max_error_rate`."""
    if not 0.0 <= max_error_rate <= 1.0:
        raise ValueError(f"eval.max_error_rate must be a fraction in [0, 1], got {max_error_rate!r}")
    return math.floor(max_error_rate * n + 1e-9)  # 0.3 * 10 is 3, not 2.9999...


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
    max_error_rate: float = 0.0,
) -> EvalOutcome:
    """Score `program` on `examples`; `ids` (default 0..n-1) name the rows that pair results across models.

    Raises `EvaluationFailed` when more than `max_error_rate` of the rows fail (see the module docstring)."""
    allowed = allowed_errors(len(examples), max_error_rate)
    failures: dict[tuple, list[tuple[str, str | None]]] = {}  # example inputs -> (error text, trace id), in order
    seen: list[str] = []  # every failure's text, program's and metric's, in the order they happened
    lock = threading.Lock()

    def record(exc: BaseException, prefix: str = "") -> str:
        scrub_exception(exc)  # DSPy's executor logs it and MLflow traces it next: keys out first
        text = prefix + error_text(exc)
        with lock:
            seen.append(text)
        return text

    def timed(**inputs):
        if len(seen) > allowed:  # the run fails anyway: send nothing more (DSPy counts this and stops)
            raise RuntimeError("not run: the evaluation's error limit was already exceeded")
        before = mlflow.get_last_active_trace_id(thread_local=True)
        start = time.perf_counter()
        try:
            prediction = program(**inputs)
        except AdapterParseError:  # the LM answered, unreadably: a wrong answer, scored 0 below
            prediction = dspy.Prediction()
            prediction._unparsed = True
        except GuardRefused as refused:  # the guarded model's answer, not a failure: scored 0 below
            prediction = dspy.Prediction()
            prediction._unparsed = True
            prediction._refused, prediction._guard_hits = refused.hit.guard, [refused.hit]
        except Exception as exc:
            text = record(exc)
            with lock:
                failures.setdefault(_key(inputs), []).append((text, _new_trace(before)))
            raise
        prediction._latency_s = time.perf_counter() - start  # underscore: not an output field
        prediction._trace_id = _new_trace(before)
        return prediction

    as_float = scored(metric)

    @functools.wraps(metric)  # MLflow names the trace assessment after the metric
    def measured(example, prediction, trace=None):
        # Not re-raised: under autolog MLflow's metric patch swallows the exception and hands DSPy a None
        # score, which breaks DSPy's sum. NaN is "no score", and the row is marked failed.
        if getattr(prediction, "_unparsed", False):
            return 0.0  # no answer to show the metric, which may not expect an empty prediction
        try:
            return as_float(example, prediction, trace)
        except Exception as exc:
            prediction._metric_error = record(exc, prefix="metric raised ")
            return float("nan")

    evaluator = dspy.Evaluate(
        devset=examples,
        metric=measured,
        num_threads=num_threads,
        display_progress=display_progress,
        provide_traceback=True,
        max_errors=allowed + 1,  # DSPy stops at this many failures: just past what our limit allows
    )
    overrides = {k: v for k, v in {"lm": lm, "adapter": adapter}.items() if v is not None}
    start = time.perf_counter()
    with dspy.context(**overrides), measure_usage() as usage:
        try:
            result = evaluator(timed)
        except Exception as exc:
            if not seen:
                raise
            raise EvaluationFailed(_failed_message(len(seen), len(examples), allowed, seen[0])) from exc
    wall = time.perf_counter() - start

    ids = list(ids) if ids is not None else list(range(len(examples)))
    rows, trace_ids = [], []
    for row_id, (example, prediction, score) in zip(ids, result.results, strict=True):
        # DSPy puts an empty Prediction in a row whose program raised; ours carry their latency.
        error, trace_id = getattr(prediction, "_metric_error", None), getattr(prediction, "_trace_id", None)
        if not hasattr(prediction, "_latency_s"):
            pending = failures.get(_key(example.inputs().toDict())) or [("no result (the program raised)", None)]
            error, trace_id = pending.pop(0)
        trace_ids.append(trace_id)
        row = {"row_id": row_id, **example.inputs().toDict()}
        for f in outputs:
            row[expected_col(f)] = example.get(f)
            row[predicted_col(f)] = getattr(prediction, f, None)
        row |= {
            "score": float("nan") if error else float(score),
            "latency_s": getattr(prediction, "_latency_s", None),
            "error": error,
        }
        if isinstance(program, Guarded):
            row["guard"] = hit_labels(getattr(prediction, "_guard_hits", []))
            row["refused_by"] = getattr(prediction, "_refused", None)
        rows.append(row)
    errors = sum(row["error"] is not None for row in rows)
    if errors > allowed:  # e.g. failed metrics, which DSPy's executor never sees
        raise EvaluationFailed(_failed_message(errors, len(examples), allowed, seen[0]))
    table = pd.DataFrame(rows)
    scores = table["score"].dropna() if len(table) else pd.Series(dtype=float)
    return EvalOutcome(
        score=float(scores.mean()) if len(scores) else float("nan"),  # DSPy's own figure counts failures as 0
        table=table,
        usage=usage.summary(),
        wall_s=wall,
        errors=errors,
        label_sets={k: v for k, v in (label_sets or {}).items() if k in outputs},
        trace_ids=trace_ids,
    )


def _new_trace(before: str | None) -> str | None:
    """The trace this thread finished since `before` was its last one (autolog traces each program call)."""
    after = mlflow.get_last_active_trace_id(thread_local=True)
    return after if after != before else None


def _failed_message(errors: int, n: int, allowed: int, first: str) -> str:
    return (
        f"evaluation failed: {errors} of {n} examples raised, more than the {allowed} that eval.max_error_rate "
        f"allows; first error: {first}"
    )


@dataclass(frozen=True)
class EvalSettings:
    num_threads: int = 1  # the embedded model serialises calls anyway; raise it for provider LMs
    display_progress: bool = False
    max_error_rate: float = 0.0  # the fraction of rows that may fail (and go unscored) before the run FAILS
    guards: GuardSet | None = None  # wrap the program in these (`guard=` group); None or empty: unguarded

    def __post_init__(self):
        allowed_errors(0, self.max_error_rate)  # a config error now, not after the first LM calls

    @classmethod
    def from_config(cls, eval_cfg, guard_cfg=None) -> EvalSettings:
        """From the `eval` config group (`conf/_base.yaml`) and the `guard` group (built here: a bad action
        is a config error before any LM call)."""
        return cls(
            num_threads=eval_cfg.num_threads,
            display_progress=eval_cfg.display_progress,
            max_error_rate=float(eval_cfg.get("max_error_rate", 0.0)),
            guards=GuardSet.from_config(guard_cfg),
        )


def evaluate_split(
    program: dspy.Module, task, split: str, settings: EvalSettings, lm=None, adapter=None
) -> EvalOutcome:
    """`evaluate_program` on one split of a task (`pipelines.data.task.Task`), rows paired by `row_id`."""
    if settings.guards:
        program = Guarded(program, settings.guards, task.contract)
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
        max_error_rate=settings.max_error_rate,
    )
