"""train -> evaluate -> register with the fake LM: our orchestration logic, fast."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow import MlflowClient

from pipelines.evaluate import evaluate
from pipelines.register import register
from pipelines.train import train


def test_train_logs_model_scores_and_lineage(make_cfg):
    cfg = make_cfg("train", ["optimizer=labeled_fewshot"])
    result = train(cfg)
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert 0.0 < result.score <= 1.0
    assert run.data.metrics["dev_score"] == result.score
    assert run.data.tags["optimizer"] == "labeled_fewshot"
    assert run.data.tags["data.digest.dev"]
    assert run.data.params["optimizer.compiler.k"] == "8"
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {
        "travel_intents-train",
        "travel_intents-dev",
        "travel_intents-test",
    }
    # The logged model scores a batch: one prediction per row, all valid labels.
    model = mlflow.pyfunc.load_model(result.model_uri)
    texts = ["I want a refund", "change my seat please", "where is my suitcase"]
    out = model.predict(pd.DataFrame({"text": texts}))
    assert list(out["label"]) == ["refund_request", "change_seat", "lost_luggage"]


def test_bootstrap_compiles_demos(make_cfg):
    cfg = make_cfg("train", ["optimizer=bootstrap"])
    result = train(cfg)
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    assert metrics["compile_lm_calls"] > 0
    assert metrics["dev_lm_calls"] > 0


def test_register_promotes_only_a_better_challenger(make_cfg, tmp_path):
    cfg = make_cfg("main", ["optimizer=none"])
    first = train(cfg)
    reg1 = register(cfg, run_id=first.run_id)
    assert reg1.promoted and reg1.reason == "no current champion"

    # Same program again: same score, so the champion stays.
    second = train(cfg)
    reg2 = register(cfg, run_id=second.run_id)
    assert not reg2.promoted
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(reg2.name, "champion").version) == reg1.version
    assert str(client.get_model_version_by_alias(reg2.name, "challenger").version) == reg2.version
    tags = client.get_model_version(reg2.name, reg2.version).tags
    assert tags["promotion.decision"] == "kept_champion"
    assert tags["promotion.test"] == "mcnemar_exact" and float(tags["promotion.p_value"]) == 1.0
    assert reg2.reason.startswith("no improvement")
    assert tags["source_run_id"] == second.run_id
    assert tags["git_commit"]

    # Forcing is explicit and recorded; the comparison report can be written to a path.
    report = tmp_path / "report.html"
    reg3 = register(cfg, run_id=second.run_id, force=True, report_path=str(report))
    assert "forced by the user" in report.read_text() and "champion v" in report.read_text()
    assert reg3.promoted
    assert client.get_model_version(reg3.name, reg3.version).tags["promotion.forced"] == "true"


def test_register_defaults_to_latest_run_and_evaluate_to_champion(make_cfg):
    cfg = make_cfg("main", ["optimizer=none"])
    trained = train(cfg)
    reg = register(cfg)  # no run id: the latest finished train run
    assert MlflowClient().get_model_version(reg.name, reg.version).tags["source_run_id"] == trained.run_id
    result = evaluate(make_cfg("evaluate"))  # no model uri: the champion, on the test split
    assert result.model_uri == f"models:/{cfg.registry.name}@champion"
    assert result.split == "test"
    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags["model_version"] == reg.version
    assert "test_score" in run.data.metrics
