"""A served model carries its bounds: saved with it, applied as it loads, overridable where it loads."""

from __future__ import annotations

import asyncio
import gc
import threading

import dspy
import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow.pyfunc import scoring_server

from pipelines.model.limits import SERVER_TIMEOUT_ENV, ServingLimits
from pipelines.model.server_threads import ServerThreads
from pipelines.serve import serve_environment
from pipelines.serving.event_loop import LOOP_ENV, THREADS_ENV, loop_factory, request_threads
from tests.serving.models import PREDICT, log_served_model, provider_config
from tests.serving.test_upstream_errors import INTENTS


def test_serve_overrides_only_the_bounds_it_is_given(make_cfg):
    cfg = make_cfg("serve", ["max_rows=50", "history_size=7"])
    limits = ServingLimits().with_environment(serve_environment(cfg))
    assert limits == ServingLimits(max_rows=50, history_size=7, cache_dir=str(cfg.paths.dspy_cache_dir))
    no_limit = serve_environment(make_cfg("serve", ["max_rows=none"]))
    assert ServingLimits().with_environment(no_limit).max_rows is None
    with pytest.raises(ValueError, match="request_threads"):
        serve_environment(make_cfg("serve", ["request_threads=0"]))
    # Outside a scoring server a model's bounds change nothing per request: no deadline, no row limit.
    assert ServingLimits().request_seconds({}) is None and ServingLimits().check_rows(5000) is None
    assert ServingLimits(request_timeout=30).request_seconds({SERVER_TIMEOUT_ENV: "60"}) == 30  # the shorter


def test_the_model_saves_its_bounds_and_applies_them_where_it_loads(fake_provider, tmp_path, monkeypatch):
    served = log_served_model(tmp_path / "store", INTENTS, PREDICT, provider_config(fake_provider))
    saved = mlflow.models.Model.load(served.uri).flavors["python_function"]["config"]
    assert saved == ServingLimits().model_config()  # every bound, so each can be overridden at load

    monkeypatch.setenv(SERVER_TIMEOUT_ENV, "60")  # what `mlflow models serve` sets: this is a scoring server
    monkeypatch.setenv("PIPELINES_SERVE_MEMORY_CACHE_ENTRIES", "10")  # an operator's variable wins
    overrides = {"max_rows": 3, "history_size": 5, "request_timeout": 4, "cache_dir": str(tmp_path / "cache")}
    previous = dspy.settings.max_history_size
    try:
        gc.unfreeze()
        loaded = mlflow.pyfunc.load_model(served.uri, model_config=overrides | {"memory_cache_entries": 99})
        assert dspy.settings.max_history_size == 5
        assert dspy.cache.memory_cache.maxsize == 10
        assert dspy.cache.disk_cache.directory == str(tmp_path / "cache")  # not ~/.dspy_cache
        assert gc.get_freeze_count() > 100_000  # the loaded heap: out of every later full collection
        assert loaded.unwrap_python_model().lm.kwargs["timeout"] == 4  # no LM attempt outlives a request
        client = TestClient(scoring_server.init(loaded))

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


async def concurrent_to_thread(n: int) -> bool:
    """Whether `n` calls of `asyncio.to_thread` (how the scoring server runs `predict`) all run at once."""
    barrier = threading.Barrier(n, timeout=10)
    await asyncio.gather(*(asyncio.to_thread(barrier.wait) for _ in range(n)))
    return not barrier.broken


def test_the_model_widens_the_scoring_servers_request_threads():
    # Loaded inside the server's running loop (uvicorn with several workers, `pipelines.serve`'s app factory)
    loop = asyncio.new_event_loop()
    try:

        async def load_then_serve():
            ServerThreads(24).at_load()
            return await concurrent_to_thread(24)

        assert loop.run_until_complete(load_then_serve())  # 24 calls at once: none waits for a thread
    finally:
        loop.close()
    # Loaded before the loop ran (uvicorn with one worker): widened from the first request's thread
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        threads = ServerThreads(24)
        threads.at_request()
        assert threads.settled
        assert asyncio.run_coroutine_threadsafe(concurrent_to_thread(24), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_the_agent_servers_loop_gets_its_request_threads(make_cfg):
    env = serve_environment(make_cfg("serve", ["request_threads=24", "stream=true"]))
    assert env[LOOP_ENV] == "pipelines.serving.event_loop:loop_factory"  # uvicorn's --loop, read from the env
    assert request_threads(env) == 24
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(THREADS_ENV, env[THREADS_ENV])
        loop = loop_factory()
    try:
        assert loop.run_until_complete(concurrent_to_thread(24))
    finally:
        loop.close()
