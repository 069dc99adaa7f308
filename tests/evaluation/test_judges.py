"""deepeval metrics through the DSPy judge adapter: fake LM for the plumbing, the real model once."""

from __future__ import annotations

from functools import partial

import dspy
import pytest
from deepeval.metrics import AnswerRelevancyMetric, GEval
from mlflow import MlflowClient
from pydantic import BaseModel

from pipelines.evaluate import evaluate
from pipelines.evaluation.judges import DeepEvalMetric, DSPyJudge
from pipelines.train import train

from .fakes import fake_lm


class Verdict(BaseModel):
    score: int
    reason: str


def test_judge_returns_the_schema_it_is_given():
    judge = DSPyJudge(fake_lm())
    verdict = judge.generate("Rate this answer.", schema=Verdict)
    assert isinstance(verdict, Verdict) and verdict.score == 1
    assert judge.get_model_name() == "dspy:fake/keyword"


def test_geval_runs_on_the_judge_and_scores_in_range():
    metric = DeepEvalMetric(
        partial(GEval, name="correctness", criteria="Is the answer the expected intent?", async_mode=False),
        judge=fake_lm(),
        evaluation_params=["input", "actual_output", "expected_output"],
    )
    assert metric.__name__ == "GEval"
    score = metric(
        dspy.Example(text="I want a refund", label="refund_request"), dspy.Prediction(label="refund_request")
    )
    assert 0.0 <= score <= 1.0


def test_evaluate_logs_deepeval_metrics_with_intervals(make_cfg):
    trained = train(make_cfg("train", ["optimizer=none"]))
    cfg = make_cfg("evaluate", ["extra_metrics=deepeval", "task.data.test_size=4"])
    result = evaluate(cfg, model_uri=trained.model_uri)
    m = MlflowClient().get_run(result.run_id).data.metrics
    for name in ("geval_correctness", "answer_relevancy"):
        assert 0.0 <= m[f"test_{name}"] <= 1.0
        assert m[f"test_{name}_ci95_low"] <= m[f"test_{name}"] <= m[f"test_{name}_ci95_high"]
        assert name in result.outcome.table


@pytest.mark.slow
def test_answer_relevancy_with_the_real_embedded_judge():
    from pipelines.lm import local_lm

    metric = DeepEvalMetric(
        partial(AnswerRelevancyMetric, async_mode=False, include_reason=False), judge=local_lm(max_tokens=384)
    )
    score = metric(
        dspy.Example(text="where is my suitcase? it did not arrive in Boston", label="lost_luggage"),
        dspy.Prediction(label="lost_luggage"),
    )
    assert 0.0 <= score <= 1.0
