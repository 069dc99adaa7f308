"""Each shipped multi-stage program is optimisable per predictor by MIPROv2, GEPA and BetterTogether
(fake LM, fake fine-tuning provider; tiny slices). The real model runs them in tests/e2e."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient
from omegaconf import open_dict

from pipelines.optimize import optimize

SLICE = [
    "task.data.train_size=6",
    "task.data.val_size=4",
    "task.data.dev_size=3",
    "task.data.test_size=1",
    "baseline=false",
    "report_splits=[dev]",
]
OPTIMIZERS = {
    "miprov2": [
        "optimizer=miprov2",
        "optimizer.compiler.auto=null",
        "optimizer.compiler.num_candidates=2",
        "optimizer.compile_args.num_trials=2",
        "optimizer.compile_args.minibatch_size=2",
    ],
    "gepa": ["optimizer=gepa", "optimizer.compiler.auto=null", "optimizer.compiler.max_metric_calls=12"],
    "bettertogether": ["optimizer=bettertogether", 'optimizer.compile_args.strategy="p -> w"'],
}
PROGRAMS = {  # experiment -> the stages (predictor name parts) its program has
    "gsm8k_draft_verify": ["draft", "verify"],
    "travel_requests": ["extract", "classify"],
    "gsm8k_agent": ["react", "extract"],
}


# BetterTogether's weight step trains on traces that pass the metric; the keyword fake never answers a math
# question right, so it runs on the travel task here (tests/e2e/test_finetune_real_lm.py runs it for real).
CASES = [(e, o) for e in PROGRAMS for o in OPTIMIZERS if not (e.startswith("gsm8k") and o == "bettertogether")]


@pytest.mark.parametrize(("experiment", "optimizer"), CASES)
def test_multistage_program_compiles_per_predictor(make_cfg, experiment, optimizer):
    cfg = make_cfg("optimize", [f"experiment={experiment}", *SLICE, *OPTIMIZERS[optimizer]])
    if optimizer == "bettertogether":
        with open_dict(cfg):
            cfg.lm.finetune = "ok"  # the fake LM's fine-tuning provider
    result = optimize(cfg)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED", run.data.tags.get("error")
    card = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/program/program.json"))
    names = [p["name"] for p in card["predictors"]]
    for stage in PROGRAMS[experiment]:
        assert any(stage in name for name in names), names
    if optimizer == "bettertogether":
        assert run.data.tags["compile_step_error"] == "false"
        stages = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/compile/stages.json"))
        assert [s["step"] for s in stages["stages"][1:]] == ["p", "w"]  # the weight step ran on this program
