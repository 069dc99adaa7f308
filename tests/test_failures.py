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
    assert run.info.status == "FAILED"
    assert run.data.tags["error"]  # the reason, e.g. a connection error
    assert "Connection" in run.data.tags["error"] or "connect" in run.data.tags["error"].lower()
