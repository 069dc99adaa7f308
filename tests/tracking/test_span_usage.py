"""Tokens on LM spans: the traces' usage (and, for a priced provider model, cost) fill in, and the stage's own
token counts are unchanged by the per-call trackers."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.tracing.constant import CostKey, SpanAttributeKey

from benchmarks.fake_provider import FakeProvider
from pipelines.train import train
from tests.conftest import compose_cfg, reset_mlflow_state

DEV = 6
ZERO_COST = {CostKey.INPUT_COST: 0.0, CostKey.OUTPUT_COST: 0.0, CostKey.TOTAL_COST: 0.0}


def traces_of(run_id: str):
    experiment = mlflow.get_run(run_id).info.experiment_id  # tests share one run; none keeps its experiment active
    return mlflow.search_traces(locations=[experiment], run_id=run_id, return_type="list", max_results=100)


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """One `train` on the fake LM under the embedded engine's model prefix, read by the tests below (none writes)."""
    reset_mlflow_state()
    overrides = ["optimizer=none", "lm.cache=false", f"task.data.dev_size={DEV}"]
    cfg = compose_cfg("train", tmp_path_factory.mktemp("span_usage"), overrides)
    cfg.lm.model = "local/keyword"  # the fake LM under the embedded engine's model prefix
    result = train(cfg)
    reset_mlflow_state()
    return cfg, result


@pytest.fixture
def run_id(fake_run):
    cfg, result = fake_run
    mlflow.set_tracking_uri(cfg.tracking.uri)
    return result.run_id


def test_every_lm_span_carries_its_tokens_and_they_add_up_to_the_runs(run_id):
    traces = traces_of(run_id)
    assert len(traces) == DEV
    for trace in traces:
        lm_spans = [s for s in trace.data.spans if s.get_attribute(SpanAttributeKey.CHAT_USAGE)]
        assert lm_spans and all(s.span_type in ("CHAT_MODEL", "LLM") for s in lm_spans)
        assert trace.info.token_usage["input_tokens"] > 0
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["dev/input_tokens"] == sum(t.info.token_usage["input_tokens"] for t in traces)
    assert metrics["dev/output_tokens"] == sum(t.info.token_usage["output_tokens"] for t in traces)


def test_a_priced_provider_models_traces_show_cost(make_cfg, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "fk-span-usage")
    with FakeProvider() as fake:
        overrides = [
            *fake.overrides(),
            "lm.model=openai/gpt-4o-mini",  # a name in LiteLLM's (offline) price table; the fake answers it
            "lm.self_hosted=false",  # reached as OpenAI's model, so priced as OpenAI prices it
            "optimizer=none",
            "lm.cache=false",
            f"task.data.dev_size={DEV}",
        ]
        result = train(make_cfg("train", overrides, fake=False))
    traces = traces_of(result.run_id)
    assert traces and all(t.info.token_usage["input_tokens"] == 50 for t in traces)  # the fake's usage per call
    cost = traces[0].info.trace_metadata.get("mlflow.trace.cost")
    assert cost is not None and '"total_cost"' in cost, traces[0].info.trace_metadata
    assert MlflowClient().get_run(result.run_id).data.metrics["dev/cost_usd"] == pytest.approx(
        sum(json.loads(t.info.trace_metadata["mlflow.trace.cost"])["total_cost"] for t in traces),
        rel=1e-3,
    )


def trace_costs(traces) -> list[float]:
    return [json.loads(t.info.trace_metadata.get("mlflow.trace.cost", "{}")).get("total_cost", 0.0) for t in traces]


def test_a_self_hosted_model_is_priced_at_nothing_even_under_a_providers_model_name(make_cfg):
    """Your own server answering as `gpt-4o-mini` costs nothing per token: neither the traces (which MLflow would
    price from LiteLLM's table by the model name alone) nor the run's cost say otherwise."""
    with FakeProvider() as fake:
        overrides = [
            *fake.overrides(),
            "lm.model=self-hosted/gpt-4o-mini",
            "lm.self_hosted=true",
            "optimizer=none",
            "lm.cache=false",
            f"task.data.dev_size={DEV}",
        ]
        result = train(make_cfg("train", overrides, fake=False))
    traces = traces_of(result.run_id)
    assert traces and all(t.info.token_usage["input_tokens"] == 50 for t in traces)  # usage is still recorded
    assert trace_costs(traces) == [0.0] * len(traces)
    assert MlflowClient().get_run(result.run_id).data.metrics["dev/cost_usd"] == 0.0


def test_the_embedded_models_lm_spans_cost_nothing(run_id):
    traces = traces_of(run_id)
    lm_spans = [s for t in traces for s in t.data.spans if s.get_attribute(SpanAttributeKey.CHAT_USAGE)]
    assert lm_spans
    assert all(s.get_attribute(SpanAttributeKey.LLM_COST) == ZERO_COST for s in lm_spans)
