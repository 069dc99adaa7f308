"""A serving process is bounded: rows per request, DSPy's cache where the config says, and flat memory."""

from __future__ import annotations

import asyncio
import gc
import threading

import dspy
import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow.pyfunc import scoring_server

from pipelines.model.limits import ServingLimits
from pipelines.serve import serve_environment
from pipelines.serving.event_loop import LOOP_ENV, THREADS_ENV, loop_factory, request_threads
from tests.serving.models import PREDICT, log_served_model, provider_config
from tests.serving.test_upstream_errors import INTENTS


def test_serve_hands_its_limits_to_the_server_process(make_cfg, tmp_path):
    cfg = make_cfg("serve", ["max_rows=50", "history_size=7", "memory_cache_entries=99"])
    env = serve_environment(cfg)
    limits = ServingLimits.from_env(env)
    assert limits == ServingLimits(
        max_rows=50, cache_dir=str(cfg.paths.dspy_cache_dir), memory_cache_entries=99, history_size=7
    )
    assert ServingLimits.from_env(serve_environment(make_cfg("serve", ["max_rows=null"]))).max_rows is None
    assert ServingLimits.from_env({}) == ServingLimits()  # a model loaded outside `serve`: nothing changes
    frozen = gc.get_freeze_count()
    ServingLimits().apply()
    assert gc.get_freeze_count() == frozen


async def concurrent_to_thread(n: int) -> bool:
    """Whether `n` calls of `asyncio.to_thread` (how the scoring server runs `predict`) all run at once."""
    barrier = threading.Barrier(n, timeout=10)
    await asyncio.gather(*(asyncio.to_thread(barrier.wait) for _ in range(n)))
    return not barrier.broken


def test_serve_gives_the_scoring_server_its_request_threads(make_cfg):
    env = serve_environment(make_cfg("serve", ["request_threads=24"]))
    assert env[LOOP_ENV] == "pipelines.serving.event_loop:loop_factory"  # uvicorn's --loop, read from the env
    assert request_threads(env) == 24
    loop = loop_factory_with(env)
    try:
        assert loop.run_until_complete(concurrent_to_thread(24))  # 24 calls at once: none waits for a thread
    finally:
        loop.close()
    assert serve_environment(make_cfg("serve", ["stream=true"]))[LOOP_ENV] == env[LOOP_ENV]  # the agent server too
    with pytest.raises(ValueError, match="request_threads"):
        serve_environment(make_cfg("serve", ["request_threads=0"]))


def loop_factory_with(env):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(THREADS_ENV, env[THREADS_ENV])
        return loop_factory()


def test_a_request_past_max_rows_is_a_400_pointing_at_the_batch_scorer(fake_provider, tmp_path, monkeypatch):
    limits = ServingLimits(max_rows=3, cache_dir=str(tmp_path / "cache"), memory_cache_entries=10, history_size=5)
    for key, value in limits.environment().items():
        monkeypatch.setenv(key, value)
    previous = dspy.settings.max_history_size
    try:
        served = log_served_model(tmp_path / "store", INTENTS, PREDICT, provider_config(fake_provider))
        gc.unfreeze()
        client = TestClient(scoring_server.init(mlflow.pyfunc.load_model(served.uri)))
        assert dspy.settings.max_history_size == 5
        assert dspy.cache.disk_cache.directory == str(tmp_path / "cache")  # not ~/.dspy_cache
        assert gc.get_freeze_count() > 100_000  # the loaded heap: out of every later full collection

        def ask(n: int):
            return client.post(
                "/invocations", json={"dataframe_split": {"columns": ["text"], "data": [["refund"]] * n}}
            )

        refused = ask(4)
        assert refused.status_code == 400
        assert "at most 3" in refused.json()["message"] and "python -m pipelines.score" in refused.json()["message"]
        assert ask(3).status_code == 200
    finally:
        gc.unfreeze()  # this test process is not a server
        dspy.configure(max_history_size=previous)
        dspy.configure_cache()
