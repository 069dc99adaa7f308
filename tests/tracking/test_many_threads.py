"""Traces written from many evaluation threads at once all reach the sqlite store, without a pool stall."""

from __future__ import annotations

import time

import mlflow
from mlflow.tracing.constant import SpanAttributeKey

from pipelines.train import train
from tests.fake_provider import FakeProvider

THREADS = 32  # past MLflow's connection pool (5 + 10 overflow): the nested checkout in start_trace once deadlocked


def test_traces_from_more_threads_than_the_pool_holds_are_all_stored(make_cfg, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "fk-threads")
    with FakeProvider(latency=0.2) as fake:
        overrides = [*fake.overrides(), "optimizer=none", "lm.cache=false", f"task.data.dev_size={THREADS}"]
        overrides += [f"eval.num_threads={THREADS}", "eval.display_progress=false", "lm.num_retries=0"]
        start = time.monotonic()
        result = train(make_cfg("train", overrides, fake=False))
        elapsed = time.monotonic() - start
    traces = mlflow.search_traces(run_id=result.run_id, return_type="list", max_results=100)
    assert len(traces) == THREADS
    for trace in traces:  # each with its LM span: no span write was lost to a pool timeout
        assert any(s.get_attribute(SpanAttributeKey.CHAT_USAGE) for s in trace.data.spans)
    # With the limited pool every thread waited out its 30 s checkout timeout: the stall is far above any
    # machine's slowness here (the rows themselves take 0.2 s each, all at once).
    assert elapsed < 30, f"{THREADS} rows at {THREADS} threads took {elapsed:.1f}s: a connection-pool stall?"
