"""Shared fixtures: configs composed from the real `conf/`, pointed at a throwaway store.

Like lightning-hydra-template's conftest: compose the real root config once per test, shrink it,
and point every path (tracking store, artifacts, DSPy cache) at `tmp_path`.
"""

from __future__ import annotations

import os

import dspy
import mlflow
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

import pipelines  # noqa: F401  (sets the offline environment defaults first)
from pipelines.cli import searchpath_override
from pipelines.config import CONF_DIR

FAKE_LM = {"_target_": "tests.fakes.fake_lm"}
SMALL = ["task.data.train_size=16", "task.data.val_size=16", "task.data.dev_size=16", "task.data.test_size=16"]


def isolated_overrides(tmp_path) -> list[str]:
    """Overrides pointing the store, artifacts, DSPy cache and outputs at `tmp_path`: for composed configs and for
    entry points run as processes alike."""
    store = tmp_path / "store"
    store.mkdir(parents=True, exist_ok=True)
    return [
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"tracking.artifact_location={store}/artifacts",
        f"paths.dspy_cache_dir={tmp_path}/dspy_cache",
        f"paths.output_dir={tmp_path}/outputs",
        "tracking.experiment=test",
        "eval.display_progress=false",
    ]


def compose_cfg(config_name: str, tmp_path, overrides=(), fake: bool = True, config_dir=CONF_DIR) -> DictConfig:
    base = isolated_overrides(tmp_path)
    if config_dir != CONF_DIR:  # a root config kept elsewhere (the benchmarks') composes conf/'s groups
        base.append(searchpath_override())
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=[*base, *SMALL, *overrides])
    if fake:
        with open_dict(cfg):
            cfg.lm = OmegaConf.create(FAKE_LM | {"model": "fake/keyword"})
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    def make(config_name: str = "train", overrides=(), fake: bool = True) -> DictConfig:
        return compose_cfg(config_name, tmp_path, overrides, fake)

    return make


def reset_mlflow_state() -> None:
    """Clear what earlier tests leave in the process: MLflow's env vars (`mlflow.set_experiment` exports
    MLFLOW_EXPERIMENT_ID, which our entry points honour as the launcher's) and active runs. Module-scoped
    fixtures run before the per-test `_isolate` below, so they call this themselves."""
    for var in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(var, None)
    # `mlflow.set_registry_uri` (our Session sets one) also keeps the URI in a module global; a later
    # MlflowClient(tracking_uri) would otherwise reach the previous test's registry.
    mlflow.tracking._model_registry.utils._registry_uri = None
    # `mlflow.set_experiment` keeps the experiment's id too: a later store that lacks it would refuse `start_run()`.
    mlflow.tracking.fluent._active_experiment_id = None
    if os.environ.get("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING") != "false":  # `tracking=server` turns it on
        mlflow.flush_trace_async_logging()
        os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"  # the package's default
        mlflow.tracing.reset()
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(autouse=True)
def _isolate(monkeypatch):
    """Each test starts with no active run, no MLFLOW_RUN_ID and DSPy's default settings."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    last_trace = mlflow.get_last_active_trace_id()
    yield
    if mlflow.get_last_active_trace_id() != last_trace:
        # With MLflow's background trace export on, store this test's traces before the next test's store is set.
        mlflow.flush_trace_async_logging()
    reset_mlflow_state()
    dspy.configure(lm=None, adapter=None)
