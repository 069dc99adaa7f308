"""Score a program on examples, one trace per example with its score on it, keeping a per-example table.

DSPy's `ParallelExecutor` (what `dspy.Evaluate` runs on) calls the program and the metric for each example.
Under MLflow's DSPy autolog (configured once per process by `pipelines.session`) each example gets a trace:
an `example` root span (the example's inputs, the program's outputs), the program's spans beneath it, and the
metric's score as feedback logged while the trace is still open, so it is written with the trace. Under
`dspy.Evaluate` + autolog the score is a store write of its own after the trace has ended: one more write
per row when traces are written as they end (the project's default), and, with MLflow's background export
(`MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=true`), a write that can beat its trace to the store and be lost
(`tests/evaluation/test_scoring.py` checks that every score reaches its trace here). In that mode the traces are
all stored once the export queue is flushed: at the end of the run (`tracking.run_lifecycle`) and before a
stage that reads them (`genai`).

The table has one row per example: `row_id`, one column per input, `expected.<field>` and
`predicted.<field>` per output, `score`, `latency_s` and `error`. Nothing here knows a field name: they
come from the examples and `outputs`.

Failure is not a wrong answer. A row whose program (or metric) raised, an LM that timed out or refused
say, gets its `error` (type and message, API keys scrubbed) and NO score: it is left out of the mean, the
interval and the per-class metrics, instead of counting as 0. If more than `max_error_rate` of the rows
fail, the evaluation raises `EvaluationFailed` naming the first error, so the run FAILS before any model
is logged; with the default 0.0 one failed row is enough. Once the limit is crossed nothing more is sent:
DSPy's executor stops at `max_errors` failures, set one past what our limit allows, and an example after
the limit is refused before its program runs. An answer the adapter cannot parse (`AdapterParseError`)
is the model's wrong answer, not a failure: it scores 0, its prediction is empty and its `parse_error`
column says why (`<split>/parse_failures` counts them). But a split on which EVERY row raised or failed to
parse says nothing about the program: the LM never produced a usable answer (a server answering in prose,
a wrong adapter or chat template), and the evaluation raises `NoUsableAnswers` whatever the limit.

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
    (0.75, ['row_id', 'text', 'expected.label', 'predicted.label', 'score', 'latency_s', 'error', 'parse_error'])
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dspy
import mlflow
import numpy as np
import pandas as pd
from dspy.utils.exceptions import AdapterParseError
from dspy.utils.parallelizer import ParallelExecutor
from mlflow.dspy.callback import MlflowCallback
from mlflow.entities import AssessmentError, AssessmentSource, SpanStatus, SpanStatusCode, SpanType

from pipelines.evaluation.metrics import as_score
from pipelines.evaluation.stats import bootstrap_ci, macro_f1, statistic_ci
from pipelines.guards import Guarded, GuardRefused, GuardSet, hit_labels
from pipelines.guards.tracing import program_traced
from pipelines.lm.secrets import scrub, scrub_exception
from pipelines.lm.usage import measure_usage
from pipelines.tracking import metric_names as names

EXAMPLE_SPAN = "example"  # the root span of each example's trace in an evaluation


class EvaluationFailed(RuntimeError):
    """More rows failed than the configured error rate allows: the scores would not be the model's."""


class NoUsableAnswers(EvaluationFailed):
    """Every row raised or came back unparseable: the LM never produced a usable answer."""


CHECK_LM = (
    "the LM never produced a usable answer: check the adapter (`adapter=`: the format the model is asked to "
    "answer in), the model (`lm=`: an instruction-tuned model, its chat template) and the server it calls"
)


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
    parse_failures: int = 0  # rows whose answer the adapter could not parse (scored 0, not errors)
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
            d("parse_failures"): float(self.parse_failures),
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
    keeping its `__name__`: the trace's assessment is named after it."""

    @functools.wraps(metric)
    def score(example, prediction, trace=None):
        return as_score(metric(example, prediction, trace))

    return score


def error_text(exc: BaseException, limit: int = 2000) -> str:
    """`Type: message`, API keys scrubbed, cut to `limit` characters (a provider may return a whole page)."""
    return scrub(f"{type(exc).__name__}: {exc}")[:limit]


def allowed_errors(n: int, max_error_rate: float) -> int:
    """How many of `n` rows may fail: error rate = failed / n must not exceed `max_error_rate`."""
    if not 0.0 <= max_error_rate <= 1.0:
        raise ValueError(f"eval.max_error_rate must be a fraction in [0, 1], got {max_error_rate!r}")
    return math.floor(max_error_rate * n + 1e-9)  # 0.3 * 10 is 3, not 2.9999...


@contextmanager
def example_trace(program: dspy.Module, inputs: dict, row_id, traced: bool) -> Iterator[Any]:
    """The root span of one example's trace (None when not traced): the program's spans beneath it, and the
    metric's score logged while it is open, so the score is written with the trace, not by a store write of
    its own per row (which a background export could beat to the store).

    The span shows what the program's own span would: a program may name safer inputs (`trace_inputs`: the
    guarded program's are its input guards' redacted row), computed before the span opens."""
    if not traced:
        yield None
        return
    shown = program.trace_inputs(inputs) if hasattr(program, "trace_inputs") else inputs
    with mlflow.start_span(name=EXAMPLE_SPAN, span_type=SpanType.CHAIN, attributes={"row_id": str(row_id)}) as span:
        span.set_inputs(shown)
        yield span


def log_score(span, name: str, score: float, error: str | None, metadata: dict | None = None) -> None:
    """The row's score (or the metric's error) as feedback on its still-open trace: kept in memory, exported
    with the trace."""
    if span is None:
        return
    source = AssessmentSource(source_type="CODE", source_id=name)
    where = {"trace_id": span.trace_id, "name": name, "source": source, "metadata": metadata, "span_id": span.span_id}
    if error is not None:
        mlflow.log_feedback(**where, error=AssessmentError("METRIC_ERROR", error))
    elif not math.isnan(score):
        mlflow.log_feedback(**where, value=score)


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
    traced: bool = True,
    score_traces: bool = True,
    annotations=None,
    split: str | None = None,
) -> EvalOutcome:
    """Score `program` on `examples`; `ids` (default 0..n-1) name the rows that pair results across models.

    `traced`: a trace per example (when MLflow's DSPy autolog traces the program at all); `score_traces`:
    the metric's score as feedback on it. `annotations` (e.g. `genai.GenAIRows`): more to write on each
    still-open trace (`on_row(span, example, row_id)`, `on_failure(span)`, `metadata` for the score's
    feedback), so it is stored with the trace in its one write instead of by a store write per item.
    Raises `EvaluationFailed` when more than `max_error_rate` of the rows fail (see the module docstring)."""
    allowed = allowed_errors(len(examples), max_error_rate)
    ids = list(ids) if ids is not None else list(range(len(examples)))
    seen: list[str] = []  # every failure's text, program's and metric's, in the order they happened
    failures: dict[int, tuple[str, str | None]] = {}  # row index -> (error text, trace id)
    lock = threading.Lock()
    overrides = {k: v for k, v in {"lm": lm, "adapter": adapter}.items() if v is not None}
    if not traced:  # autolog's callback would still trace the program's calls, each in a trace of its own
        overrides["callbacks"] = [c for c in dspy.settings.callbacks if not isinstance(c, MlflowCallback)]
    traced = traced and program_traced()
    name = getattr(metric, "__name__", "metric")
    as_float = scored(metric)

    def record(exc: BaseException, prefix: str = "") -> str:
        scrub_exception(exc)  # DSPy's executor logs it and MLflow traces it next: keys out first
        text = prefix + error_text(exc)
        with lock:
            seen.append(text)
        return text

    def score_of(example, prediction) -> tuple[float, str | None]:
        if getattr(prediction, "_unparsed", False):
            return 0.0, None  # no answer to show the metric, which may not expect an empty prediction
        try:
            return as_float(example, prediction), None
        except Exception as exc:
            return float("nan"), record(exc, prefix="metric raised ")

    def run_row(item):
        index, example = item
        if len(seen) > allowed:  # the run fails anyway: send nothing more
            raise RuntimeError("not run: the evaluation's error limit was already exceeded")
        inputs = example.inputs().toDict()
        with example_trace(program, inputs, ids[index], traced) as span:
            if span is not None and annotations is not None:
                annotations.on_row(span, example, ids[index])
            start = time.perf_counter()
            try:
                prediction = program(**inputs)
            except AdapterParseError as exc:  # the LM answered, unreadably: a wrong answer, scored 0
                prediction = _unanswered(span, exc)
                prediction._parse_error = error_text(exc)
            except GuardRefused as refused:  # the guarded model's answer, not a failure: scored 0
                prediction = _unanswered(span, refused)
                prediction._refused, prediction._guard_hits = refused.hit.guard, [refused.hit]
            except Exception as exc:
                text = record(exc)  # scrubbed before the span records it on the way out
                with lock:
                    failures[index] = (text, span.trace_id if span else None)
                if span is not None and annotations is not None:
                    annotations.on_failure(span)
                raise
            prediction._latency_s = time.perf_counter() - start  # underscore: not an output field
            prediction._trace_id = span.trace_id if span else None
            score, error = score_of(example, prediction)
            prediction._metric_error = error
            if span is not None:
                span.set_outputs({f: getattr(prediction, f, None) for f in outputs})
                if score_traces:
                    log_score(span, name, score, error, getattr(annotations, "metadata", None))
        return prediction, score

    executor = ParallelExecutor(
        num_threads=num_threads,
        max_errors=allowed + 1,  # DSPy stops at this many failures: just past what our limit allows
        disable_progress_bar=not display_progress,
        provide_traceback=True,
        compare_results=True,
    )
    start = time.perf_counter()
    with dspy.context(**overrides), measure_usage() as usage:
        try:
            results = executor.execute(run_row, list(enumerate(examples)))
        except Exception as exc:
            if not seen:
                raise
            raise EvaluationFailed(_failed_message(len(seen), len(examples), allowed, seen[0])) from exc
    wall = time.perf_counter() - start

    rows, trace_ids = [], []
    for index, (row_id, example, result) in enumerate(zip(ids, examples, results, strict=True)):
        prediction, score = result if isinstance(result, tuple) else (dspy.Prediction(), float("nan"))
        error = getattr(prediction, "_metric_error", None)
        trace_id = getattr(prediction, "_trace_id", None)
        if not isinstance(result, tuple):  # the program raised
            error, trace_id = failures.get(index, ("no result (the program raised)", None))
        trace_ids.append(trace_id)
        row = {"row_id": row_id, **example.inputs().toDict()}
        for f in outputs:
            row[expected_col(f)] = example.get(f)
            row[predicted_col(f)] = getattr(prediction, f, None)
        row |= {
            "score": float("nan") if error else float(score),
            "latency_s": getattr(prediction, "_latency_s", None),
            "error": error,
            "parse_error": getattr(prediction, "_parse_error", None),
        }
        if isinstance(program, Guarded):
            row["guard"] = hit_labels(getattr(prediction, "_guard_hits", []))
            row["refused_by"] = getattr(prediction, "_refused", None)
        rows.append(row)
    errors = sum(row["error"] is not None for row in rows)
    if errors > allowed:  # e.g. failed metrics, which DSPy's executor never sees
        raise EvaluationFailed(_failed_message(errors, len(examples), allowed, seen[0]))
    unparsed = [row["parse_error"] for row in rows if row["parse_error"] is not None]
    raised = [text for text, _ in failures.values()]  # the program's failures (a metric's: the LM did answer)
    if rows and len(raised) + len(unparsed) == len(rows):
        raise NoUsableAnswers(_unusable_message(len(rows), split, raised, unparsed))
    table = pd.DataFrame(rows)
    scores = table["score"].dropna() if len(table) else pd.Series(dtype=float)
    return EvalOutcome(
        score=float(scores.mean()) if len(scores) else float("nan"),
        table=table,
        usage=usage.summary(),
        wall_s=wall,
        errors=errors,
        parse_failures=len(unparsed),
        label_sets={k: v for k, v in (label_sets or {}).items() if k in outputs},
        trace_ids=trace_ids,
    )


def _unanswered(span, exc: BaseException) -> dspy.Prediction:
    """An empty prediction scored 0; the trace marked ERROR with the reason, as the program's span is."""
    if span is not None:
        span.set_status(SpanStatus(SpanStatusCode.ERROR, error_text(exc)))
    prediction = dspy.Prediction()
    prediction._unparsed = True
    return prediction


def _failed_message(errors: int, n: int, allowed: int, first: str) -> str:
    return (
        f"evaluation failed: {errors} of {n} examples raised, more than the {allowed} that eval.max_error_rate "
        f"allows; first error: {first}"
    )


def _unusable_message(n: int, split: str | None, raised: list[str], unparsed: list[str]) -> str:
    rows = f"all {n} {split} rows" if split else f"all {n} rows"
    if not raised:
        what = f"{rows} failed to parse"
    elif not unparsed:
        what = f"{rows} raised"
    else:
        what = f"{rows} failed ({len(raised)} raised, {len(unparsed)} failed to parse)"
    first = " ".join((raised or unparsed)[0].split())[:500]  # one line: the adapter's message spans several
    return f"{what}: {first}; {CHECK_LM}"


@dataclass(frozen=True)
class EvalSettings:
    num_threads: int = 1  # the embedded model serialises calls anyway; raise it for provider LMs
    display_progress: bool = False
    max_error_rate: float = 0.0  # the fraction of rows that may fail (and go unscored) before the run FAILS
    guards: GuardSet | None = None  # wrap the program in these (`guard=` group); None or empty: unguarded
    traced: bool = True  # a trace per example (`tracking.autolog.log_traces_from_eval`)
    score_traces: bool = True  # the score as feedback on each trace
    annotations: Any = None  # more written on each open trace (`evaluate_program`): the GenAI evaluation's rows

    def __post_init__(self):
        allowed_errors(0, self.max_error_rate)  # a config error now, not after the first LM calls

    @classmethod
    def from_config(cls, eval_cfg, guard_cfg=None, tracking_cfg=None) -> EvalSettings:
        """From the `eval` config group (`conf/_base.yaml`), the `guard` group (built here: a bad action
        is a config error before any LM call) and `tracking` (whether evaluations are traced)."""
        autolog = (tracking_cfg or {}).get("autolog") or {}
        return cls(
            num_threads=eval_cfg.num_threads,
            display_progress=eval_cfg.display_progress,
            max_error_rate=float(eval_cfg.get("max_error_rate", 0.0)),
            guards=GuardSet.from_config(guard_cfg),
            traced=bool(autolog.get("log_traces_from_eval", True)),
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
        traced=settings.traced,
        score_traces=settings.score_traces,
        annotations=settings.annotations,
        split=split,
    )
