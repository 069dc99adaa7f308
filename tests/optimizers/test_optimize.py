"""`optimize` with each optimiser config, budgets and sweeps, on tiny slices with the fake LM."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from pipelines.config import PROJECT_ROOT
from pipelines.optimize import optimize

TINY = ["task.data.train_size=8", "task.data.dev_size=8", "task.data.test_size=8"]
# Each optimiser shrunk to a handful of steps; the configs themselves are the shipped ones.
SHRINK = {
    "miprov2": [
        "optimizer.compiler.auto=null",
        "optimizer.compiler.num_candidates=2",
        "optimizer.compile_args.num_trials=3",
        "optimizer.compile_args.minibatch_size=4",
    ],
    "simba": ["optimizer.compiler.bsize=4", "optimizer.compiler.max_steps=2", "optimizer.compiler.num_candidates=2"],
    "gepa": ["optimizer.compiler.auto=null", "optimizer.compiler.max_metric_calls=40"],
    "bootstrap_rs": ["optimizer.compiler.num_candidate_programs=2"],
    "bootstrap": [],
    "labeled_fewshot": [],
}


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_each_optimizer_runs_end_to_end(make_cfg, name):
    cfg = make_cfg("optimize", [f"optimizer={name}", *TINY, *SHRINK[name]])
    result = optimize(cfg)
    run = MlflowClient().get_run(result.run_id)
    m, tags = run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["optimizer"] == name and tags["entry_point"] == "optimize"
    for split in ("dev", "test"):
        assert 0.0 <= m[f"baseline_{split}_score"] <= 1.0
        assert 0.0 <= m[f"{split}_score"] <= 1.0
        assert m[f"{split}_gain"] == pytest.approx(m[f"{split}_score"] - m[f"baseline_{split}_score"])
    for stage in ("baseline", "compile", "evaluate"):
        assert m[f"{stage}_wall_s"] >= 0
    assert m["compile_cost_usd"] == 0.0
    if name != "labeled_fewshot":  # LabeledFewShot only copies examples
        assert m["compile_lm_calls"] > 0 and m["compile_input_tokens"] > 0
    assert tags["stopped_by_budget"] == "false"
    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id, "program")}
    assert artifacts == {"program/program.json", "program/program.md"}
    assert tags["model_uri"] == result.model_uri


def test_demos_change_the_fake_lms_answers():
    """Guards the fake itself: if demos stopped mattering, the optimiser tests would prove little."""
    import dspy

    from pipelines.programs import Classifier

    from .fakes import fake_lm

    clf = Classifier(labels=["book_flight", "flight_status"], instructions="Classify.")
    query = "any news about the arrival time of QR 8 tonight"  # no keyword rule fires
    with dspy.context(lm=fake_lm(), adapter=dspy.JSONAdapter()):
        assert clf(text=query).label == "book_flight"  # the default
        clf.predict.demos = [dspy.Example(text="what is the arrival time of LX 318", label="flight_status")]
        assert clf(text=query).label == "flight_status"  # the nearest demo's label


def test_budget_stops_cleanly_with_best_so_far(make_cfg):
    cfg = make_cfg(
        "optimize",
        ["optimizer=bootstrap_rs", "optimizer.compiler.num_candidate_programs=4", "budget.max_lm_calls=20", *TINY],
    )
    result = optimize(cfg)
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert result.stopped_by_budget and "max_lm_calls=20" in result.stopped_by_budget
    assert run.data.tags["stopped_by_budget"].startswith("max_lm_calls=20")
    assert run.data.metrics["compile_lm_calls"] == 20  # checked before each call: never one past
    assert "test_score" in run.data.metrics  # the kept program was still evaluated and logged


def test_sweep_makes_one_parent_with_children_and_comparison(tmp_path):
    store = tmp_path / "store"
    cmd = [
        sys.executable,
        "-m",
        "pipelines.optimize",
        "-m",
        "optimizer=bootstrap_rs,labeled_fewshot",
        "lm._target_=tests.fakes.fake_lm",
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"tracking.artifact_location={store}/artifacts",
        f"paths.dspy_cache_dir={tmp_path}/cache",
        f"hydra.sweep.dir={tmp_path}/multirun",
        "tracking.experiment=sweep-test",
        "eval.display_progress=false",
        "optimizer.compiler.num_candidate_programs=2",
        *TINY,
    ]
    # num_candidate_programs only exists in bootstrap_rs: `+` would add it to labeled_fewshot too, so
    # give each job its own value through the sweep instead.
    cmd = [c for c in cmd if not c.startswith("optimizer.compiler.num_candidate_programs")]
    store.mkdir()
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    exp = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("entry_point") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["optimizer"] for r in children) == ["bootstrap_rs", "labeled_fewshot"]
    assert parent.info.status == "FINISHED"
    paths = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.html", "comparison.json"} <= paths
    table = json.loads(open(client.download_artifacts(parent.info.run_id, "comparison.json", str(tmp_path))).read())
    assert {row["optimizer"] for row in table} == {"bootstrap_rs", "labeled_fewshot"}
    assert all(row["score"] is not None and row["baseline"] is not None for row in table)
    html = open(client.download_artifacts(parent.info.run_id, "comparison.html", str(tmp_path))).read()
    assert "plotly" in html.lower() and "bootstrap_rs" in html
    assert parent.data.tags["best_optimizer"] in {"bootstrap_rs", "labeled_fewshot"}


def test_bettertogether_weight_step_without_finetuning_provider_fails_before_spending(make_cfg):
    from pipelines.optimizers.compile import FinetuningUnavailable

    cfg = make_cfg("optimize", ["optimizer=bettertogether", *TINY])
    with pytest.raises(FinetuningUnavailable, match="no fine-tuning provider"):
        optimize(cfg)
    client = MlflowClient()
    exp = client.get_experiment_by_name("test")
    (run,) = client.search_runs([exp.experiment_id], "tags.entry_point = 'optimize'")
    assert run.info.status == "FAILED"  # visibly failed, with the reason
    assert "FinetuningUnavailable" in run.data.tags["error"]
    assert run.data.metrics.get("compile_lm_calls", 0) == 0  # nothing spent on prompt optimisation


def test_bettertogether_prompts_only_strategy_runs(make_cfg):
    cfg = make_cfg(
        "optimize",
        [
            "optimizer=bettertogether",
            "optimizer.compile_args.strategy=p",
            *TINY,
        ],
    )
    result = optimize(cfg)
    assert MlflowClient().get_run(result.run_id).info.status == "FINISHED"
