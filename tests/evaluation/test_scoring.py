"""evaluate_program with a tiny deterministic program (no LM): the per-example table, errors, metric names."""

from __future__ import annotations

import dspy
import pandas as pd
import pytest

from pipelines.evaluation.metrics import exact_match
from pipelines.evaluation.runner import EvalOutcome, EvaluationFailed, evaluate_program

# text -> (gold intent, gold city); the program answers (first word, last word)
DATA = [
    ("refund rome", "refund", "rome"),  # 1.0
    ("refund oslo", "refund", "lima"),  # 0.5
    ("book lima", "cancel", "lima"),  # 0.5
    ("book kyiv", "book", "kyiv"),  # 1.0
    ("cancel paris", "refund", "rome"),  # 0.0
    ("cancel rome", "cancel", "rome"),  # 1.0
]
SCORES = [1.0, 0.5, 0.5, 1.0, 0.0, 1.0]
IDS = [10, 3, 7, 22, 5, 1]
OUTPUTS = ["intent", "city"]
COLUMNS = [
    "row_id",
    "text",
    "expected.intent",
    "predicted.intent",
    "expected.city",
    "predicted.city",
    "score",
    "latency_s",
    "error",
    "parse_error",
]


def examples() -> list[dspy.Example]:
    return [dspy.Example(text=t, intent=i, city=c).with_inputs("text") for t, i, c in DATA]


class FirstLast(dspy.Module):
    """intent = the first word, city = the last word; raises on the texts in `fail_on`."""

    def __init__(self, fail_on=()):
        super().__init__()
        self.fail_on = set(fail_on)

    def forward(self, text: str) -> dspy.Prediction:
        if text in self.fail_on:
            raise ValueError(f"no answer for {text!r}")
        words = text.split()
        return dspy.Prediction(intent=words[0], city=words[-1])


def run(program=None, **kwargs) -> EvalOutcome:
    args = {"outputs": OUTPUTS, "ids": IDS} | kwargs
    return evaluate_program(program or FirstLast(), examples(), exact_match, **args)


def test_table_columns_ids_and_values():
    outcome = run()
    table = outcome.table
    assert table.columns.tolist() == COLUMNS
    assert table["row_id"].tolist() == IDS
    assert table["text"].tolist() == [t for t, _, _ in DATA]
    assert table["expected.intent"].tolist() == [i for _, i, _ in DATA]
    assert table["expected.city"].tolist() == [c for _, _, c in DATA]
    assert table["predicted.intent"].tolist() == [t.split()[0] for t, _, _ in DATA]
    assert table["predicted.city"].tolist() == [t.split()[-1] for t, _, _ in DATA]
    assert table["score"].tolist() == SCORES
    assert table["error"].isna().all() and outcome.errors == 0
    assert (table["latency_s"] >= 0).all() and (table["latency_s"] < 5).all()


def test_score_is_the_mean_of_the_per_example_scores():
    outcome = run()
    assert outcome.score == pytest.approx(sum(SCORES) / 6, abs=1e-4)  # DSPy rounds its percentage
    low, high = outcome.ci()
    assert low <= outcome.score <= high and low < high
    assert outcome.wall_s >= 0 and outcome.usage["lm_calls"] == 0


def test_ids_default_to_positions():
    assert run(ids=None).table["row_id"].tolist() == list(range(6))


def test_a_program_that_raises_on_one_example_gets_an_error_row():
    """A failure is not a wrong answer: the row carries the error and no score, and the mean skips it."""
    outcome = run(FirstLast(fail_on={"book kyiv"}), max_error_rate=0.2)
    table = outcome.table.set_index("row_id")
    failed = table.loc[22]
    assert pd.isna(failed["score"])
    assert pd.isna(failed["predicted.intent"]) and pd.isna(failed["predicted.city"])
    assert failed["expected.intent"] == "book" and failed["text"] == "book kyiv"
    assert failed["error"] == "ValueError: no answer for 'book kyiv'"
    assert table.drop(index=22)["error"].isna().all()
    assert outcome.errors == 1
    others = [s for (text, _, _), s in zip(DATA, SCORES, strict=True) if text != "book kyiv"]
    assert outcome.score == pytest.approx(sum(others) / len(others))
    assert outcome.metrics("dev")["dev/errors"] == 1.0


def test_a_program_with_no_output_is_a_wrong_answer_not_a_failure():
    class Silent(dspy.Module):
        def forward(self, text):
            return dspy.Prediction()

    outcome = run(Silent())
    assert outcome.errors == 0 and outcome.score == 0.0
    assert outcome.table["error"].isna().all()


def test_too_many_failures_stop_the_evaluation_with_the_first_error():
    everything = {t for t, _, _ in DATA}
    with pytest.raises(EvaluationFailed) as info:
        run(FirstLast(fail_on=everything))
    message = str(info.value)
    assert "more than the 0" in message
    assert "ValueError: no answer for" in message


def test_metric_names():
    outcome = run(label_sets={"intent": ["book", "cancel", "refund"], "unused": ["x"]})
    assert outcome.label_sets == {"intent": ["book", "cancel", "refund"]}  # only output fields
    m = outcome.metrics("dev")
    assert set(m) == {
        "score/dev",
        "score/dev/ci_low",
        "score/dev/ci_high",
        "dev/examples",
        "dev/errors",
        "dev/parse_failures",
        "dev/wall_s",
        "dev/latency_p50_s",
        "dev/latency_p95_s",
        "dev/latency_p99_s",
        "dev/lm_calls",
        "dev/input_tokens",
        "dev/output_tokens",
        "dev/cost_usd",
        "dev/macro_f1",
        "dev/macro_f1/ci_low",
        "dev/macro_f1/ci_high",
    }
    assert m["dev/examples"] == 6.0 and m["dev/errors"] == 0.0 and m["score/dev"] == outcome.score
    # Per class: a table, not a metric each. intent: book 1/1 right, cancel 1/2 (book lima), refund 2/3 (cancel paris)
    per_class = outcome.per_class().set_index("label")["accuracy"].to_dict()
    assert per_class == pytest.approx({"book": 1.0, "cancel": 0.5, "refund": 2 / 3})


def test_two_label_fields_are_named_per_field():
    cities = ["kyiv", "lima", "paris", "rome", "oslo"]
    outcome = run(label_sets={"intent": ["book", "cancel", "refund"], "city": cities})
    m = outcome.metrics("val")
    assert {"val/intent/macro_f1", "val/city/macro_f1", "val/city/macro_f1/ci_low"} <= set(m)
    assert "val/macro_f1" not in m
    per_class = outcome.per_class().set_index(["field", "label"])["accuracy"]
    assert per_class[("city", "rome")] == pytest.approx(2 / 3)  # rome expected 3 times, once said paris
    assert ("intent", "book") in per_class.index


@pytest.fixture(params=["sync", "background"])
def traced_store(request, tmp_path, monkeypatch):
    """A fresh store with MLflow's DSPy autolog on; traces written as each ends (the project's default) or by
    MLflow's background export (MLflow's own default, `MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=true`)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", str(request.param == "background").lower())
    mlflow.tracing.reset()  # the exporter is built for the mode on the next trace
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.set_experiment("scores-on-traces")
    mlflow.dspy.autolog(log_traces=True, log_traces_from_eval=True)
    yield experiment.experiment_id
    mlflow.dspy.autolog(disable=True)
    mlflow.flush_trace_async_logging()
    monkeypatch.undo()
    mlflow.tracing.reset()


def stored_traces(experiment_id: str) -> dict:
    import mlflow

    mlflow.flush_trace_async_logging()  # what a run's end does (pipelines.tracking.run_lifecycle)
    traces = mlflow.search_traces(locations=[experiment_id], return_type="list", max_results=100)
    return {t.info.trace_id: t for t in traces}


@pytest.mark.parametrize("num_threads", [1, 4])
def test_every_score_reaches_its_trace_once(traced_store, num_threads):
    """Under `dspy.Evaluate` + autolog the score is a store write after the trace has ended: with the export in
    the background it could arrive before its trace and be lost (18-19 of 32 rows kept theirs, measured); now it
    is logged while the trace is open and travels with it, in either mode."""
    import mlflow

    with mlflow.start_run():
        outcome = run(FirstLast(fail_on={"book lima"}), max_error_rate=0.5, num_threads=num_threads)
    traces = stored_traces(traced_store)
    assert len(traces) == len(DATA) and set(outcome.trace_ids) == set(traces)
    for (_, row), trace_id in zip(outcome.table.iterrows(), outcome.trace_ids, strict=True):
        trace = traces[trace_id]
        root = next(s for s in trace.data.spans if s.parent_id is None)
        assert root.name == "example" and root.inputs == {"text": row["text"]}
        assert {s.name for s in trace.data.spans} >= {"FirstLast.forward"}
        feedback = [a for a in trace.info.assessments if a.name == "exact_match"]
        if isinstance(row["error"], str):  # the program raised: the trace says so, and no score
            assert trace.info.state == "ERROR" and feedback == [] and "no answer for" in row["error"]
            continue
        assert root.outputs == {"intent": row["predicted.intent"], "city": row["predicted.city"]}
        assert [a.value for a in feedback] == [row["score"]]  # one score, the table's


def test_scores_stay_off_the_traces_when_asked(traced_store):
    import mlflow

    with mlflow.start_run():
        run(score_traces=False)
    traces = stored_traces(traced_store)
    assert len(traces) == len(DATA) and not any(t.info.assessments for t in traces.values())


def test_untraced_evaluation_writes_no_trace(traced_store):
    import mlflow

    with mlflow.start_run():
        outcome = run(traced=False)
    assert outcome.trace_ids == [None] * len(DATA) and not stored_traces(traced_store)
