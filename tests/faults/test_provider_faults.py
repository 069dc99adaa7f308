"""A provider that fails, rate-limits, hangs or leaks, behind the real `train` pipeline (`fake_provider.py`).

Each test prints what the fake saw (`-s` shows it): the number of requests per case is part of the evidence.
"""

from __future__ import annotations

import time

import mlflow
import pytest
from mlflow import MlflowClient

from benchmarks.fake_provider import FakeProvider
from pipelines.config import REDACTED
from pipelines.evaluation.runner import EvaluationFailed
from pipelines.lm import provider_lm
from pipelines.register import register
from pipelines.registry.versions import RegistryError
from pipelines.train import train
from tests.helpers import files_containing

KEY = "fk-7Q2-leaky-SENTINEL-93ad"  # no pattern LiteLLM's own redaction knows: only ours can catch it
DEV = 10


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", KEY)


def train_cfg(make_cfg, fake: FakeProvider, *extra):
    # One row at a time: the requests a failing evaluation sends before it stops are exactly one row's.
    overrides = [*fake.overrides(), "optimizer=none", "lm.cache=false", f"task.data.dev_size={DEV}"]
    overrides += ["eval.num_threads=1", *extra]
    return make_cfg("train", overrides, fake=False)


def the_run():
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    return run


def no_model_anywhere(make_cfg, fake) -> None:
    run = the_run()
    assert "model_uri" not in run.data.tags
    assert mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list") == []
    with pytest.raises(RegistryError, match="No finished train/optimize run with a model"):
        register(make_cfg("register", fake.overrides(), fake=False))
    assert MlflowClient().search_registered_models() == []


def test_thirty_percent_failures_complete_with_retries(make_cfg):
    with FakeProvider(fail_every=(1, 4, 7)) as fake:
        result = train(train_cfg(make_cfg, fake, "lm.num_retries=2"))
    print(f"30% failures: {fake.requests} requests, {fake.statuses.count(500)} failed and retried")
    run = the_run()
    assert run.info.status == "FINISHED" and result.model_uri
    assert run.data.metrics["dev/errors"] == 0 and run.data.metrics["dev/examples"] == DEV
    assert fake.statuses.count(500) >= 3  # the failures happened ...
    assert fake.statuses.count(200) >= DEV  # ... and every example was answered after its retry
    retried = [after for before, after in zip(fake.statuses, fake.statuses[1:], strict=False) if before == 500]
    assert retried == [200] * len(retried)  # each retry got through


def test_a_dead_provider_fails_the_run_in_bounded_time_and_leaves_no_model(make_cfg):
    with FakeProvider(fail_all=True) as fake:
        start = time.monotonic()
        # DSPy's LMServerError; LiteLLM's InternalServerError on lm.engine=litellm
        with pytest.raises(EvaluationFailed, match="ServerError"):
            train(train_cfg(make_cfg, fake, "lm.num_retries=1"))
        elapsed = time.monotonic() - start
    print(f"100% failures: {fake.requests} requests, failed after {elapsed:.1f}s")
    assert fake.requests == 2  # the first example, tried twice: the evaluation stops at the first failure
    assert elapsed < 60
    run = the_run()
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("EvaluationFailed: evaluation failed: 1 of 10 examples raised")
    assert "score/dev" not in run.data.metrics
    no_model_anywhere(make_cfg, fake)


def test_a_hung_provider_is_cut_at_the_timeout(make_cfg):
    hang = 30.0
    with FakeProvider(hang_all=True, hang_s=hang) as fake:
        start = time.monotonic()
        with pytest.raises(EvaluationFailed, match="Timeout"):
            train(train_cfg(make_cfg, fake, "lm.timeout=1", "lm.num_retries=1"))
        elapsed = time.monotonic() - start
    print(f"hang: {fake.requests} requests, each cut after 1s; run failed after {elapsed:.1f}s")
    assert fake.requests == 2  # sent, timed out, retried once, timed out
    assert elapsed < hang  # never waited for the hung answer
    assert the_run().info.status == "FAILED"


def test_a_429_is_retried_after_its_retry_after(make_cfg):
    """One call, first answered 429 `Retry-After: 2`: DSPy waits those 2 s (its own backoff would be 1 s)."""
    with FakeProvider(too_many=1, retry_after=2) as fake:
        lm = provider_lm("openai/fake", api_key_env="FAKE_KEY", api_base=fake.url, cache=False, num_retries=3)
        assert lm("I want a refund") == ['{"label": "refund_request"}']
    gap = fake.times[1] - fake.times[0]
    print(f"429: {fake.requests} requests, retried after {gap:.2f}s")
    assert fake.statuses == [429, 200]
    assert gap >= 1.9


def test_a_provider_echoing_the_key_leaks_it_nowhere(make_cfg, tmp_path):
    with FakeProvider(echo_auth=True) as fake:
        with pytest.raises(EvaluationFailed) as info:
            train(train_cfg(make_cfg, fake))
    print(f"leaky 401: {fake.requests} requests")
    assert fake.auth == [f"Bearer {KEY}"] and fake.statuses == [401]  # the key was sent, and echoed: not retried
    assert KEY not in str(info.value) and REDACTED in str(info.value)
    run = the_run()
    assert run.info.status == "FAILED"
    assert KEY not in run.data.tags["error"] and "received Authorization: Bearer " + REDACTED in run.data.tags["error"]
    assert all(KEY not in value for value in run.data.tags.values())
    # The error text did reach the store (the run's tag, the failed call's trace spans), scrubbed; the key did
    # not reach any file: sqlite store, artifacts, DSPy cache, Hydra outputs.
    (db,) = tmp_path.rglob("mlflow.db")
    assert db.read_bytes().count(b"received Authorization: Bearer " + REDACTED.encode()) >= 2
    assert files_containing(tmp_path, KEY) == []
