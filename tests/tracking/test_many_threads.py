"""Traces written from many evaluation threads at once all reach the sqlite store, without a pool stall."""

from __future__ import annotations

import mlflow
from mlflow.tracing.constant import SpanAttributeKey

from benchmarks.fake_provider import FakeProvider
from pipelines.train import train

THREADS = 32  # past MLflow's connection pool (5 + 10 overflow): the nested checkout in start_trace once deadlocked


def test_traces_from_more_threads_than_the_pool_holds_are_all_stored(make_cfg, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "fk-threads")
    with FakeProvider(latency=0.2) as fake:
        overrides = [*fake.overrides(), "optimizer=none", "lm.cache=false", f"task.data.dev_size={THREADS}"]
        overrides += [f"eval.num_threads={THREADS}", "eval.display_progress=false", "lm.num_retries=0"]
        result = train(make_cfg("train", overrides, fake=False))
    traces = mlflow.search_traces(run_id=result.run_id, return_type="list", max_results=100)
    assert len(traces) == THREADS
    # With the old limit (5 + 10 connections) the threads deadlocked on the nested checkout until the pool's 30 s
    # timeout, and the traces of the threads that timed out were lost: 12 of 32 were stored.
    for trace in traces:  # each with its LM span: no span write was lost to a pool timeout
        assert any(s.get_attribute(SpanAttributeKey.CHAT_USAGE) for s in trace.data.spans)
