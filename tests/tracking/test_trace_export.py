"""Which way traces are written: `tracking.background_traces` drives MLflow's switch, null leaves it alone."""

from __future__ import annotations

import os
import time

import mlflow
import pytest

from pipelines.tracking.store import ASYNC_TRACES_ENV, set_trace_export


@pytest.mark.parametrize(("background", "expected"), [(True, "true"), (False, "false"), (None, "as-before")])
def test_the_config_sets_mlflows_switch_or_leaves_it(monkeypatch, background, expected):
    monkeypatch.setenv(ASYNC_TRACES_ENV, "as-before")
    resets = []
    monkeypatch.setattr("mlflow.tracing.reset", lambda: resets.append(1))
    set_trace_export(background)
    assert os.environ[ASYNC_TRACES_ENV] == expected
    assert resets == ([] if background is None else [1])  # the exporter is rebuilt for the new mode
    set_trace_export(background)
    assert len(resets) <= 1  # unchanged: nothing rebuilt


def test_local_stores_keep_the_default_and_the_server_exports_in_the_background(make_cfg):
    assert make_cfg("register").tracking.background_traces is None
    assert make_cfg("register", ["tracking=server"]).tracking.background_traces is True
    # The entry points that trace every row they score export in the background on any store.
    assert make_cfg("train").tracking.background_traces is True
    assert make_cfg("main").tracking.background_traces is True
    assert make_cfg("optimize").tracking.background_traces is True
    assert make_cfg("evaluate").tracking.background_traces is True


def test_a_flush_returns_once_the_queue_is_drained(tmp_path):
    """MLflow's export consumer polls its queue a second at a time; a flush does not wait that poll out."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    set_trace_export(True)
    with mlflow.start_span("row"):
        pass
    mlflow.flush_trace_async_logging()  # stores the trace
    start = time.monotonic()
    for _ in range(3):
        mlflow.flush_trace_async_logging()  # nothing left to store
    assert time.monotonic() - start < 1.0
    assert len(mlflow.search_traces(return_type="list")) == 1
