"""Runs are named after what they did, whoever started them: our entry points or `mlflow run`."""

from __future__ import annotations

from mlflow import MlflowClient

from pipelines.tracking.store import configure_tracking
from pipelines.train import train


def test_a_run_started_by_mlflow_run_is_renamed_after_what_it_did(make_cfg, monkeypatch):
    cfg = make_cfg("train", ["optimizer=labeled_fewshot"])
    experiment_id = configure_tracking(cfg.tracking)
    launched = MlflowClient().create_run(experiment_id)  # what `mlflow run` does: a run with a random name
    monkeypatch.setenv("MLFLOW_RUN_ID", launched.info.run_id)
    result = train(cfg)
    assert result.run_id == launched.info.run_id
    assert MlflowClient().get_run(result.run_id).info.run_name == "train-labeled_fewshot-travel_intents"


def test_a_run_started_here_is_named_after_its_entry_optimizer_and_task(make_cfg):
    result = train(make_cfg("train", ["optimizer=none"]))
    assert MlflowClient().get_run(result.run_id).info.run_name == "train-none-travel_intents"
