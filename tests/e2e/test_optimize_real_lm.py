"""MIPROv2 (auto=light) with the REAL embedded model, on a tiny slice: the optimised score is logged
beside the baseline, with MIPROv2's per-trial evaluations as autologged child runs."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from pipelines.optimize import optimize

pytestmark = pytest.mark.slow


def test_miprov2_light_real_lm(make_cfg):
    cfg = make_cfg(
        "optimize",
        [
            "optimizer=miprov2",
            "optimizer.compiler.auto=light",
            "optimizer.compile_args.minibatch_size=8",
            "task.data.train_size=8",
            "task.data.val_size=8",
            "task.data.dev_size=8",
            "task.data.test_size=8",
            "report_splits=[test]",
        ],
        fake=False,
    )
    result = optimize(cfg)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert 0.0 <= m["baseline/test"] <= 1.0 and 0.0 <= m["score/test"] <= 1.0
    assert m["gain/test"] == pytest.approx(m["score/test"] - m["baseline/test"])
    assert m["compile/lm_calls"] > 10 and m["compile/cost_usd"] == 0.0
    # Score per optimisation step: MLflow's DSPy autolog logs MIPROv2's full evaluations.
    steps = client.get_metric_history(result.run_id, "eval_full")
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert steps or children, "no per-step scores were logged"
