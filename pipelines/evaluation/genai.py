"""Our evaluation as an MLflow GenAI evaluation: the split as a managed dataset, the task metric as a scorer.

`scoring.evaluate_split` runs the program once per example under DSPy autolog (one trace each) and keeps the
per-example table. The run then looks as `mlflow.genai.evaluate` would leave it, scoring those traces with the
task metric as its scorer: tagged `mlflow.runType=genai_evaluate` (the experiment's "Evaluation runs" tab),
the traces linked to it, each output field's expected value as an expectation and the scorer's value as
feedback (with the run as its source) on every trace, the traces tagged `split`, `model`, `row_id`, the mean
as `<scorer>/mean` linked to the dataset and the model. What goes on a trace is written while it is still
open (`GenAIRows`, handed to `scoring` in `EvalSettings.annotations`), so it is stored with the trace in its
one write; the run's own part is a few batched writes. `mlflow.genai.evaluate` itself writes each tag,
expectation and feedback and links each trace on its own, then reads every trace back (six writes and two
reads a row, measured by `benchmarks.entry_points`); it is still used where there are no traces.

    >>> rows = GenAIRows.for_task(task, split="test", model="travel_intents v3")     # doctest: +SKIP
    >>> outcome = evaluate_split(program, task, "test", replace(settings, annotations=rows))  # doctest: +SKIP
    >>> dataset = split_dataset(task, "test", experiment_id)                      # doctest: +SKIP
    >>> log_genai_evaluation(outcome, task, "test", model="travel_intents v3",
    ...                      dataset=dataset)                                      # doctest: +SKIP

Each row's trace is the one `scoring` recorded for it (`EvalOutcome.trace_ids`): a row whose program raised
has a trace in ERROR state and no outputs, and its scorer feedback is an error (no score), as its table row
has no score; a row refused by a guard or answered unreadably scores 0. A row with no trace is left out with a
warning; with no traces at all (tracing switched off), `mlflow.genai.evaluate` scores the rows as a static
dataset and makes a minimal trace for each.

Datasets and versions. Open-source MLflow 3.17 has no dataset versions: `list_versions()` and
`get_dataset(version=)` are Databricks-only, and a dataset's `digest` is recomputed from its name and the
time on every `merge_records` (tracking store `upsert_dataset_records`), so a digest is a write stamp, not a
content hash. Here a version is one content: `<task>-<split>` datasets carry tags `data.digest` (the split's
content digest, the one the run's `mlflow.data` input and `data.digest.<split>` tag record) and `version`
(1, 2, ... in order of creation). Evaluating the same split content again reuses its dataset untouched (same
digest); new content makes a new dataset of the same name with the next version. Records are unique by
inputs (MLflow upserts on the inputs' hash), so a split with repeated inputs has fewer records than rows.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import dspy
import mlflow
import pandas as pd
from mlflow.entities import AssessmentError, AssessmentSource, Feedback, LoggedModelInput
from mlflow.genai.scorers import Scorer, scorer

from pipelines.data.splits import log_split_input
from pipelines.evaluation.metrics import as_score
from pipelines.evaluation.runner import EvalOutcome, expected_col, predicted_col

log = logging.getLogger(__name__)

DIGEST_TAG, VERSION_TAG = "data.digest", "version"  # dataset tags: the split content it holds, its version
RUN_TYPE_TAG, GENAI_RUN_TYPE = "mlflow.runType", "genai_evaluate"  # what mlflow.genai.evaluate tags its run
SOURCE_RUN_KEY = "mlflow.assessment.sourceRunId"  # a scorer's feedback names the evaluation run that wrote it
NO_PREDICTION = AssessmentError(error_code="NO_PREDICTION", error_message="the program raised (see the trace)")
LINKS_PER_CALL = 100  # the tracking store links at most this many traces to a run per request


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class GenAIRows:
    """What the GenAI evaluation puts on each row's trace, written by `scoring` while the trace is open:
    tags `split`, `model`, `row_id`; an expectation per output field (a person's: the data's label); the run
    as the source of the score's feedback; an error feedback where the program raised."""

    outputs: tuple[str, ...]
    scorer: str  # the task metric's name: the feedback's name
    run_id: str
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_task(cls, task, *, split: str, model: str, run_id: str | None = None) -> GenAIRows:
        run_id = run_id or mlflow.active_run().info.run_id
        name = getattr(task.metric, "__name__", "metric")
        return cls(tuple(task.contract.output_names), name, run_id, {"split": split, "model": model})

    @property
    def metadata(self) -> dict[str, str]:
        return {SOURCE_RUN_KEY: self.run_id}

    def on_row(self, span, example, row_id) -> None:
        for key, value in {**self.tags, "row_id": str(row_id)}.items():
            mlflow.set_trace_tag(span.trace_id, key, value)  # the trace is in memory: no store write
        source = AssessmentSource(source_type="HUMAN", source_id=_user())
        for name in self.outputs:
            mlflow.log_expectation(
                trace_id=span.trace_id, name=name, value=_plain(example.get(name)), source=source, span_id=span.span_id
            )

    def on_failure(self, span) -> None:
        source = AssessmentSource(source_type="CODE", source_id=self.scorer)
        mlflow.log_feedback(
            trace_id=span.trace_id, name=self.scorer, source=source, error=NO_PREDICTION, metadata=self.metadata,
            span_id=span.span_id,
        )  # fmt: skip


def task_scorer(metric, lm=None) -> Scorer:
    """The task metric as an MLflow scorer of `(inputs, outputs, expectations)`, named after the metric.

    Mirrors `scoring.evaluate_program`: no outputs at all (the program raised) is an error feedback, not a
    score; an empty answer (unparsable, or refused by a guard) scores 0 without asking the metric; otherwise
    the metric's value in [0, 1]. An LM-judged metric judges with `lm` (DSPy's cache answers a repeat)."""
    name = getattr(metric, "__name__", "metric")
    source = AssessmentSource(source_type="CODE", source_id=name)

    def score(inputs, outputs, expectations):
        if outputs is None:
            return Feedback(name=name, source=source, error=NO_PREDICTION)
        if all(value is None for value in outputs.values()):
            return 0.0
        example = dspy.Example(**inputs, **(expectations or {})).with_inputs(*inputs)
        with dspy.context(lm=lm) if lm is not None else contextlib.nullcontext():
            return as_score(metric(example, dspy.Prediction(**outputs)))

    return scorer(score, name=name)


def _plain(value):
    """A table cell as JSON-able Python: numpy scalars to Python, NaN to None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def table_records(table: pd.DataFrame, inputs: list[str], outputs: list[str]) -> list[dict]:
    """Per table row: its `inputs` and `expectations` (the expected value of each output field)."""
    return [
        {
            "inputs": {f: _plain(row[f]) for f in inputs},
            "expectations": {f: _plain(row[expected_col(f)]) for f in outputs},
        }
        for _, row in table.iterrows()
    ]


def split_dataset(task, split: str, experiment_id: str):
    """The split as an `mlflow.genai.datasets` dataset `<task>-<split>`, created once per content (see above)."""
    from mlflow.genai import datasets

    name, digest = f"{task.name}-{split}", task.splits.mlflow_dataset(split).digest
    found = datasets.search_datasets(experiment_ids=[experiment_id], filter_string=f"name = '{name}'")
    for dataset in found:
        if (dataset.tags or {}).get(DIGEST_TAG) == digest:
            return dataset
    version = 1 + max((int((d.tags or {}).get(VERSION_TAG, 0)) for d in found), default=0)
    tags = {DIGEST_TAG: digest, VERSION_TAG: str(version), "task": task.name, "split": split}
    dataset = datasets.create_dataset(name=name, experiment_id=experiment_id, tags=tags)
    outputs = task.contract.output_names
    dataset.merge_records(
        [
            {
                "inputs": {k: _plain(v) for k, v in example.inputs().items()},
                "expectations": {f: _plain(example.get(f)) for f in outputs},
            }
            for example in task.examples(split)
        ]
    )
    return datasets.get_dataset(dataset_id=dataset.dataset_id)  # the digest after the merge


def evaluation_rows(
    outcome: EvalOutcome, inputs: list[str], outputs: list[str], traces: dict[str, object], tags: dict[str, str]
) -> tuple[pd.DataFrame, int]:
    """`mlflow.genai.evaluate` data: a row per table row (its trace, inputs, outputs, expectations, tags) and
    the number of rows left out for want of a trace. `outputs` is None where the program raised."""
    table = outcome.table
    trace_ids = outcome.trace_ids or [None] * len(table)
    rows, missing = [], 0
    records = table_records(table, inputs, outputs)
    for record, trace_id, (_, row) in zip(records, trace_ids, table.iterrows(), strict=True):
        failed = isinstance(row.get("error"), str)
        record |= {
            "outputs": None if failed else {f: _plain(row[predicted_col(f)]) for f in outputs},
            "tags": tags | {"row_id": str(_plain(row["row_id"]))},
        }
        if traces:
            if trace_id not in traces:
                missing += 1
                continue
            record["trace"] = traces[trace_id]
        rows.append(record)
    return pd.DataFrame(rows), missing


@dataclass
class GenAIEvaluation:
    run_id: str
    rows: int  # rows evaluated by MLflow
    missing: int  # rows left out: no trace of theirs in the run
    metrics: dict[str, float]


def log_genai_evaluation(
    outcome: EvalOutcome,
    task,
    split: str,
    *,
    model: str,
    dataset=None,
    model_id: str | None = None,
    lm=None,
) -> GenAIEvaluation | None:
    """Make the active run the GenAI evaluation of `outcome`'s traces, scored by the task metric.

    The traces already hold their tags, expectations and feedback (`GenAIRows`); this tags the run, links the
    traces to it (a write per 100 traces), links `dataset` (from `split_dataset`) and the model `model_id`, and
    logs `<scorer>/mean`. Without traces, `mlflow.genai.evaluate` scores the table's rows as a static dataset."""
    run = mlflow.active_run()
    run_id = run.info.run_id
    traced = [t for t in outcome.trace_ids if t]
    missing = len(outcome.table) - len(traced)
    if not traced:
        return _static_evaluation(outcome, task, split, model=model, dataset=dataset, model_id=model_id, lm=lm)
    if missing:
        log.warning("%d of %d rows have no trace in this run: not in the GenAI evaluation", missing, len(outcome.table))
    mlflow.flush_trace_async_logging()  # with a background trace export, the traces are stored before linking
    client = mlflow.MlflowClient()
    if dataset is not None:
        log_split_input(dataset, split)
    if model_id:
        client.log_inputs(run_id, models=[LoggedModelInput(model_id=model_id)])
    if run.data.tags.get(RUN_TYPE_TAG) is None:
        mlflow.set_tag(RUN_TYPE_TAG, GENAI_RUN_TYPE)
    for start in range(0, len(traced), LINKS_PER_CALL):
        client.link_traces_to_run(traced[start : start + LINKS_PER_CALL], run_id=run_id)
    name = getattr(task.metric, "__name__", "metric")
    scores = outcome.table["score"].dropna()
    metrics = {f"{name}/mean": float(scores.mean())} if len(scores) else {}
    if metrics:
        mlflow.log_metrics(metrics, dataset=dataset, model_id=model_id)
    return GenAIEvaluation(run_id=run_id, rows=len(traced), missing=missing, metrics=metrics)


def _static_evaluation(outcome, task, split, *, model, dataset, model_id, lm) -> GenAIEvaluation | None:
    """No traces (tracing off): `mlflow.genai.evaluate` on the table's rows, a minimal trace made for each."""
    contract = task.contract
    tags = {"split": split, "model": model}
    data, _ = evaluation_rows(outcome, contract.input_names, contract.output_names, {}, tags)
    if data.empty:
        return None
    if dataset is not None:
        log_split_input(dataset, split)
    # MLflow writes a "view the results" note to stdout: our entry points end with their own summary.
    with contextlib.redirect_stdout(io.StringIO()) as note:
        result = mlflow.genai.evaluate(data=data, scorers=[task_scorer(task.metric, lm)], model_id=model_id)
    log.debug("%s", note.getvalue())
    return GenAIEvaluation(run_id=result.run_id, rows=len(data), missing=0, metrics=dict(result.metrics))
