"""`evaluate` as an MLflow GenAI evaluation, read back through MLflow's public client: the run's type, its
traces with expectations and the task scorer's feedback, the split as a managed dataset, the small report.
Fake LM throughout."""

from __future__ import annotations

import math
import warnings

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.genai.datasets import search_datasets

from pipelines.evaluate import evaluate
from pipelines.evaluation.genai import DIGEST_TAG, VERSION_TAG, task_scorer
from pipelines.evaluation.metrics import exact_match
from pipelines.evaluation.runner import expected_col, predicted_col
from pipelines.register import register
from pipelines.train import train
from tests.fakes import KeywordEngine

OUTPUTS = ["label"]  # the default task's output fields (from its contract)


def champion(make_cfg):
    """Train and register a champion; its version, and the id of the logged model behind it."""
    cfg = make_cfg("main", ["optimizer=none"])
    trained = train(cfg)
    return register(cfg, run_id=trained.run_id), trained.model_uri.split("/")[-1]


def scorer_feedback(trace, run_id: str, name: str):
    """The feedback the run's scorer logged on a trace (an evaluation's own score has the same name, no run)."""
    (found,) = [
        a
        for a in trace.info.assessments
        if a.feedback is not None
        and a.name == name
        and (a.metadata or {}).get("mlflow.assessment.sourceRunId") == run_id
    ]
    return found


def test_the_evaluation_run_is_a_genai_evaluation_run(make_cfg):
    registered, model_id = champion(make_cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate(make_cfg("evaluate"), split="test")
    # MLflow's hint about the split's integer `row_id` column is ours to know, not the user's to read.
    assert not [w for w in caught if "Inferred schema contains integer column" in str(w.message)]
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.tags["mlflow.runType"] == "genai_evaluate"  # what mlflow.genai.evaluate marks
    assert not run.outputs.model_outputs  # the UI lists runs that log no model under "Evaluation runs"
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id]  # linked to the logged model
    assert run.data.metrics["exact_match/mean"] == pytest.approx(result.score)

    table = result.outcome.table.set_index("row_id")
    traces = mlflow.search_traces(run_id=result.run_id, return_type="list")
    assert len(traces) == len(table)
    seen = set()
    for trace in traces:
        tags = trace.info.tags
        assert tags["split"] == "test" and tags["model"] == f"travel_intents v{registered.version}"
        row = table.loc[int(tags["row_id"])]
        seen.add(int(tags["row_id"]))
        expectations = {a.name: a.value for a in trace.info.assessments if a.expectation is not None}
        assert expectations == {f: row[expected_col(f)] for f in OUTPUTS}  # one per output field
        assert scorer_feedback(trace, result.run_id, "exact_match").value == row["score"]
        feedback = [a.name for a in trace.info.assessments if a.feedback is not None]
        assert feedback.count("exact_match") == 1  # the scorer's only: our evaluation leaves it to the scorer
    assert seen == set(table.index)

    # The split is a managed dataset, linked to the run; evaluating the same content again reuses it.
    (dataset,) = search_datasets(experiment_ids=[run.info.experiment_id], filter_string="name = 'travel_intents-test'")
    records = dataset.to_df()
    assert sorted(r["text"] for r in records["inputs"]) == sorted(table["text"])
    assert {r["inputs"]["text"]: r["expectations"] for _, r in records.iterrows()} == {
        text: {"label": label} for text, label in zip(table["text"], table[expected_col("label")], strict=True)
    }
    assert dataset.tags[DIGEST_TAG] == run.data.tags["data.digest.test"] and dataset.tags[VERSION_TAG] == "1"
    linked = [d.dataset for d in run.inputs.dataset_inputs if d.dataset.source_type == "mlflow_evaluation_dataset"]
    assert [(d.name, d.digest) for d in linked] == [(dataset.name, dataset.digest)]
    again = evaluate(make_cfg("evaluate"), split="test")
    (same,) = search_datasets(experiment_ids=[run.info.experiment_id], filter_string="name = 'travel_intents-test'")
    assert (same.dataset_id, same.digest) == (dataset.dataset_id, dataset.digest)

    # The report is small (plotly.js is logged once per experiment, not inlined) and names the model version.
    report = mlflow.artifacts.load_text(f"runs:/{result.run_id}/eval/test_report.html")
    assert len(report.encode()) < 200_000
    assert f"Evaluation of travel_intents v{registered.version} on test" in report
    assert "Plotly.newPlot" in report and "get-artifact" in report
    plotly_js = [f.path for f in client.list_artifacts(result.run_id, "report")]
    assert len(plotly_js) == 1 and plotly_js[0].endswith(".min.mjs")
    assert not client.list_artifacts(again.run_id, "report")  # the second run reuses the first one's copy
    assert result.run_id in mlflow.artifacts.load_text(f"runs:/{again.run_id}/eval/test_report.html")


def test_failed_and_refused_rows_have_traces_without_a_score(make_cfg, monkeypatch):
    """A row whose LM raised: an error feedback, no score (as in the table). A guard's refusal: scored 0."""
    complete = KeywordEngine.complete

    def flaky(self, request):
        if "seat" in (self._field(request.messages[-1].text or "", "text") or "").lower():
            raise ConnectionError("provider unreachable")
        return complete(self, request)

    monkeypatch.setattr(KeywordEngine, "complete", flaky)
    cfg = make_cfg("evaluate", ["guard=strict", "guard.max_length.max_chars=45", "eval.max_error_rate=1.0"])
    result = evaluate(cfg, split="test", fresh=True)  # the program from config: no champion to train first
    table = result.outcome.table.set_index("row_id")
    failed, refused = table[table["error"].notna()], table[table["refused_by"].notna()]
    assert len(failed) and len(refused)  # the data has both kinds of row
    traces = {int(t.info.tags["row_id"]): t for t in mlflow.search_traces(run_id=result.run_id, return_type="list")}
    assert set(traces) == set(table.index)
    for row_id in failed.index:
        feedback = scorer_feedback(traces[row_id], result.run_id, "exact_match")
        assert feedback.value is None and feedback.error.error_code == "NO_PREDICTION"
        assert math.isnan(table.loc[row_id, "score"])
    for row_id in refused.index:
        assert scorer_feedback(traces[row_id], result.run_id, "exact_match").value == 0.0
        assert table.loc[row_id, "score"] == 0.0


def test_switched_off_is_a_plain_run(make_cfg):
    result = evaluate(make_cfg("evaluate", ["tracking.genai_surfaces=false"]), split="test", fresh=True)
    run = MlflowClient().get_run(result.run_id)
    assert "mlflow.runType" not in run.data.tags
    assert not search_datasets(experiment_ids=[run.info.experiment_id])
    trace = mlflow.search_traces(run_id=result.run_id, return_type="list")[0]
    assert "split" not in trace.info.tags and not [a for a in trace.info.assessments if a.expectation is not None]


def test_task_scorer_mirrors_the_table_rules():
    score = task_scorer(exact_match)
    assert score.name == "exact_match"
    inputs, expectations = {"text": "where is my bag"}, {"label": "lost_luggage"}
    assert score(inputs=inputs, outputs={"label": "lost_luggage"}, expectations=expectations) == 1.0
    assert score(inputs=inputs, outputs={"label": "Lost_Luggage "}, expectations=expectations) == 1.0
    assert score(inputs=inputs, outputs={"label": None}, expectations=expectations) == 0.0  # no answer
    assert score(inputs=inputs, outputs=None, expectations=expectations).error.error_code == "NO_PREDICTION"
    assert predicted_col("label") == "predicted.label"  # the table columns the rows are read from
