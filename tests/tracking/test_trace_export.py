"""Which way traces are written: `tracking.background_traces` drives MLflow's switch, null leaves it alone."""

from __future__ import annotations

import os

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
    assert make_cfg("train").tracking.background_traces is None
    assert make_cfg("train", ["tracking=server"]).tracking.background_traces is True
