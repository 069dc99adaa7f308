"""deepeval metrics through the DSPy judge adapter: fake LM for the plumbing, the real model once."""

from __future__ import annotations

from functools import partial

import dspy
import pytest
from deepeval.metrics import AnswerRelevancyMetric, GEval
from deepeval.test_case import SingleTurnParams
from mlflow import MlflowClient
from pydantic import BaseModel

from pipelines.evaluate import evaluate
from pipelines.evaluation.deepeval_judges import DeepEvalMetric, DSPyJudge
from pipelines.evaluation.runner import expected_col, predicted_col
from pipelines.train import train
from tests.evaluation.judge_probe import RecordingMetric
from tests.fakes import fake_lm


class Verdict(BaseModel):
    score: int
    reason: str


@pytest.fixture
def recording():
    RecordingMetric.reset()
    yield RecordingMetric
    RecordingMetric.reset()


def test_judge_returns_the_schema_it_is_given():
    judge = DSPyJudge(fake_lm())
    verdict = judge.generate("Rate this answer.", schema=Verdict)
    assert isinstance(verdict, Verdict) and verdict.score == 1
    assert judge.get_model_name() == "dspy:fake/keyword"
    assert judge.load_model() is judge.lm
    assert isinstance(judge.generate("Say something."), str)  # no schema: the reply's text


def test_the_judge_sees_the_bare_value_of_a_single_field(recording):
    metric = DeepEvalMetric(recording, judge=fake_lm())
    example = dspy.Example(text="I want a refund", label="refund_request").with_inputs("text")
    assert metric(example, dspy.Prediction(label="refund_request")) == 1.0
    assert metric(example, dspy.Prediction(label="cancel_booking")) == 0.0
    case = recording.cases[0]
    assert (case.input, case.actual_output, case.expected_output) == (
        "I want a refund",
        "refund_request",
        "refund_request",
    )
    assert recording.cases[1].actual_output == "cancel_booking"
    assert metric.__name__ == "RecordingMetric"  # named after the metric unless told
    assert isinstance(recording.built[0].model, DSPyJudge) and recording.built[0].evaluation_params is None


def test_the_judge_sees_name_value_lines_for_several_fields(recording):
    metric = DeepEvalMetric(
        recording, judge=fake_lm(), name="routing", evaluation_params=["input", "actual_output", "expected_output"]
    )
    example = dspy.Example(
        ticket="my card was charged twice", tier="pro", team="billing", priority="high", _note="not a field"
    ).with_inputs("ticket", "tier")
    score = metric(example, dspy.Prediction(team="billing", priority="low", reasoning="not asked for"))
    assert score == 0.0 and metric.__name__ == "routing"
    (case,) = recording.cases
    assert case.input == "ticket: my card was charged twice\ntier: pro"
    # Outputs are the example's labels in its order (underscored keys left out); other predicted fields are not.
    assert case.expected_output == "team: billing\npriority: high"
    assert case.actual_output == "team: billing\npriority: low"
    assert recording.built[0].evaluation_params == [
        SingleTurnParams.INPUT,
        SingleTurnParams.ACTUAL_OUTPUT,
        SingleTurnParams.EXPECTED_OUTPUT,
    ]
    # A missing prediction is judged as such, not as an error.
    assert metric(example, None) == 0.0
    assert recording.cases[-1].actual_output == "team: None\npriority: None"


def test_a_falsy_single_value_is_rendered_as_itself(recording):
    metric = DeepEvalMetric(recording, judge=fake_lm())
    example = dspy.Example(question="What is 3 - 3?", answer=0).with_inputs("question")
    assert metric(example, dspy.Prediction(answer=0)) == 1.0
    assert recording.cases[0].expected_output == "0"


def test_geval_runs_on_the_judge_and_scores_in_range():
    metric = DeepEvalMetric(
        partial(GEval, name="correctness", criteria="Is the answer the expected intent?", async_mode=False),
        judge=fake_lm(),
        evaluation_params=["input", "actual_output", "expected_output"],
    )
    assert metric.__name__ == "GEval"
    one = dspy.Example(text="I want a refund", label="refund_request").with_inputs("text")
    assert 0.0 <= metric(one, dspy.Prediction(label="refund_request")) <= 1.0
    two = dspy.Example(text="a hotel in Rome for June", intent="book_hotel", city="rome").with_inputs("text")
    assert 0.0 <= metric(two, dspy.Prediction(intent="book_hotel", city="milan")) <= 1.0


def test_evaluate_logs_deepeval_metrics_with_intervals(make_cfg):
    trained = train(make_cfg("train", ["optimizer=none"]))
    cfg = make_cfg("evaluate", ["extra_metrics=deepeval", "task.data.test_size=4"])
    result = evaluate(cfg, model_uri=trained.model_uri)
    m = MlflowClient().get_run(result.run_id).data.metrics
    for name in ("geval_correctness", "answer_relevancy"):
        assert 0.0 <= m[f"test/{name}"] <= 1.0
        assert m[f"test/{name}/ci_low"] <= m[f"test/{name}"] <= m[f"test/{name}/ci_high"]
        assert name in result.outcome.table
        assert len(result.outcome.table[name]) == 4


def test_evaluate_shows_each_judge_the_examples_it_scored(make_cfg, recording):
    """Each extra metric judges every evaluated row: its input, its expected output and the model's answer."""
    trained = train(make_cfg("train", ["optimizer=none"]))
    spy = "+extra_metrics.spy"
    cfg = make_cfg(
        "evaluate",
        [
            f"{spy}._target_=pipelines.evaluation.deepeval_judges.DeepEvalMetric",
            f"{spy}.name=spy",
            f"{spy}.judge=null",
            f"{spy}.metric._target_=tests.evaluation.judge_probe.RecordingMetric",
            f"{spy}.metric._partial_=true",
            "task.data.test_size=6",
        ],
    )
    result = evaluate(cfg, model_uri=trained.model_uri, split="test")
    table = result.outcome.table
    shown = [(c.input, c.expected_output, c.actual_output) for c in recording.cases]
    assert shown == list(zip(table["text"], table[expected_col("label")], table[predicted_col("label")], strict=True))
    # No judge configured: the evaluated model's own LM judges.
    assert {b.model.get_model_name() for b in recording.built} == {"dspy:fake/keyword"}
    # The recorder scores exact matches, so its mean is the task score; it is logged with an interval.
    assert list(table["spy"]) == list(table["score"])
    m = MlflowClient().get_run(result.run_id).data.metrics
    assert m["test/spy"] == pytest.approx(table["score"].mean())
    assert m["test/spy"] == pytest.approx(m["score/test"], abs=1e-4)  # `test_score` is DSPy's, rounded
    assert m["test/spy/ci_low"] <= m["test/spy"] <= m["test/spy/ci_high"]


@pytest.mark.slow
def test_answer_relevancy_with_the_real_embedded_judge():
    from pipelines.lm import local_lm

    metric = DeepEvalMetric(
        partial(AnswerRelevancyMetric, async_mode=False, include_reason=False), judge=local_lm(max_tokens=384)
    )
    score = metric(
        dspy.Example(text="where is my suitcase? it did not arrive in Boston", label="lost_luggage").with_inputs(
            "text"
        ),
        dspy.Prediction(label="lost_luggage"),
    )
    assert 0.0 <= score <= 1.0


def test_a_dspy_judge_can_be_the_task_metric(make_cfg):
    """An LLM judge (here the fake LM, which answers every number field with 1) scores a whole run as the
    task's own metric: train and the table use it, and its name labels the scores."""
    from pipelines.evaluation.dspy_judge import LLMJudge
    from pipelines.train import train

    cfg = make_cfg(
        "train",
        [
            "optimizer=none",
            "~task.metric._partial_",
            "task.metric._target_=pipelines.evaluation.dspy_judge.LLMJudge",
            "+task.metric.criteria=Same intent.",
        ],
    )
    result = train(cfg)
    assert result.scores["dev"] == 1.0
    judge = LLMJudge(judge=None)
    example = dspy.Example(text="hi", label="a").with_inputs("text")
    with dspy.context(lm=fake_lm()):
        assert judge(example, dspy.Prediction(label="b")) == 1.0
