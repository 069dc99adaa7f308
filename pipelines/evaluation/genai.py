"""Our evaluation as an MLflow GenAI evaluation: the split as a managed dataset, the task metric as a scorer.

`scoring.evaluate_split` has already run the program once per example under DSPy autolog (one trace each)
and kept the per-example table. This hands those same traces to `mlflow.genai.evaluate` inside the same run,
with no `predict_fn`: nothing calls the program again. MLflow then tags the run `mlflow.runType=genai_evaluate`,
links the traces to it, logs each output field's expected value as an expectation and the task scorer's value
as feedback on every trace, and shows the run in the experiment's "Evaluation runs" tab (per example: inputs,
outputs, expectations, assessments; traces tagged `split`, `model`, `row_id`).

    >>> dataset = split_dataset(task, "test", experiment_id)                      # doctest: +SKIP
    >>> log_genai_evaluation(outcome, task, "test", model="travel_intents v3",
    ...                      dataset=dataset)                                      # doctest: +SKIP

Each row's trace is the one `scoring` recorded for it (`EvalOutcome.trace_ids`): a row whose program raised
has a trace in ERROR state and no outputs, and its scorer feedback is an error (no score), as its table row
has no score; a row refused by a guard or answered unreadably scores 0. A row with no trace in the run is
left out with a warning; with no traces at all (tracing switched off), MLflow scores the rows as a static
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
import io
import logging
from dataclasses import dataclass

import dspy
import mlflow
import pandas as pd
from mlflow.entities import AssessmentError, AssessmentSource, Feedback
from mlflow.genai.scorers import Scorer, scorer

from pipelines.data.splits import log_split_input
from pipelines.evaluation.metrics import as_score
from pipelines.evaluation.scoring import EvalOutcome, expected_col, predicted_col

log = logging.getLogger(__name__)

DIGEST_TAG, VERSION_TAG = "data.digest", "version"  # dataset tags: the split content it holds, its version


def task_scorer(metric, lm=None) -> Scorer:
    """The task metric as an MLflow scorer of `(inputs, outputs, expectations)`, named after the metric.

    Mirrors `scoring.evaluate_program`: no outputs at all (the program raised) is an error feedback, not a
    score; an empty answer (unparsable, or refused by a guard) scores 0 without asking the metric; otherwise
    the metric's value in [0, 1]. An LM-judged metric judges with `lm` (DSPy's cache answers a repeat)."""
    name = getattr(metric, "__name__", "metric")
    source = AssessmentSource(source_type="CODE", source_id=name)

    def score(inputs, outputs, expectations):
        if outputs is None:
            error = AssessmentError(error_code="NO_PREDICTION", error_message="the program raised (see the trace)")
            return Feedback(name=name, source=source, error=error)
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


def run_traces(run_id: str, experiment_id: str) -> dict[str, object]:
    """The run's traces by id."""
    traces = mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list")
    return {trace.info.trace_id: trace for trace in traces}


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
    """Score the active run's traces of `outcome` with the task scorer through `mlflow.genai.evaluate`.

    `dataset` (from `split_dataset`) is linked to the run as an input; `model` names the evaluated model on
    every trace (tag `model`); `model_id` links the run to the logged model."""
    run = mlflow.active_run()
    contract = task.contract
    tags = {"split": split, "model": model}
    mlflow.flush_trace_async_logging()  # with a background trace export, scoring's traces all stored first
    traces = run_traces(run.info.run_id, run.info.experiment_id)
    data, missing = evaluation_rows(outcome, contract.input_names, contract.output_names, traces, tags)
    if missing:
        log.warning("%d of %d rows have no trace in this run: not in the GenAI evaluation", missing, len(outcome.table))
    if data.empty:
        return None
    if dataset is not None:
        log_split_input(dataset, split)
    # MLflow writes a "view the results" note to stdout: our entry points end with their own summary.
    with contextlib.redirect_stdout(io.StringIO()) as note:
        result = mlflow.genai.evaluate(data=data, scorers=[task_scorer(task.metric, lm)], model_id=model_id)
    log.debug("%s", note.getvalue())
    return GenAIEvaluation(run_id=result.run_id, rows=len(data), missing=missing, metrics=dict(result.metrics))
