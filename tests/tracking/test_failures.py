"""An LM that keeps failing is retried, then fails the run visibly: FAILED, with the reason."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from pipelines.train import train

from .helpers import free_port


def test_unreachable_lm_fails_the_run_with_its_reason(make_cfg):
    port = free_port()  # nothing listens here
    cfg = make_cfg(
        "train",
        [
            "lm=openai_compatible",
            f"lm.api_base=http://127.0.0.1:{port}/v1",
            "lm.model=openai/nothing-here",
            "lm.num_retries=1",
            "lm.cache=false",
            "optimizer=none",
            "task.data.dev_size=12",
        ],
        fake=False,
    )
    with pytest.raises(Exception):  # noqa: B017 (whatever litellm raises; the run's record is what matters)
        train(cfg)
    client = MlflowClient()
    exp = client.get_experiment_by_name("test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED", run.info.status
    assert run.data.tags["error"]  # the reason, e.g. a connection error
    assert "connect" in run.data.tags["error"].lower(), run.data.tags["error"]


def test_sigterm_ends_the_run_failed_not_running(tmp_path):
    """A run killed by SIGTERM (a scheduler, a timeout) is marked FAILED with the reason."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from pipelines.config import PROJECT_ROOT

    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments()  # create the store's tables now, not concurrently with the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.train",
            "lm._target_=tests.fakes.fake_lm",
            f"tracking.uri={uri}",
            f"tracking.artifact_location={store}/artifacts",
            "tracking.experiment=term",
            "optimizer=none",
            f"paths.dspy_cache_dir={tmp_path}/cache",
            "task.data.dev_size=200",
            "task.data.test_size=40",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=PROJECT_ROOT,
        env=os.environ | {"PIPELINES_TEST_SLOW_FAKE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    run = None
    while time.monotonic() < deadline and run is None:
        time.sleep(0.5)
        try:
            exp = client.get_experiment_by_name("term")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            run = runs[0] if runs and runs[0].data.tags.get("data.source") else None
        except Exception:  # the child may be mid-write
            pass
    assert run is not None, "the run never started"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FAILED", (run.info.status, proc.returncode, run.data.tags.get("error"))
    assert "SIGTERM" in run.data.tags["error"]
