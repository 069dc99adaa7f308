"""An LM that answers every call, but never (or too rarely) in a form that parses: no run FINISHES on it and no
version it made becomes champion. `tests.fakes.GarbageEngine` answers in prose, as a misconfigured server would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import open_dict

from pipelines.evaluation.runner import NoUsableAnswers
from pipelines.main import run_main
from pipelines.register import register
from pipelines.train import train
from tests.conftest import SMALL, isolated_overrides

ROOT = Path(__file__).resolve().parents[2]


def garbled(cfg, garbage=True):
    with open_dict(cfg):
        cfg.lm.garbage = garbage
    return cfg


def runs():
    client = MlflowClient()
    return client.search_runs([client.get_experiment_by_name("test").experiment_id])


def no_champion():
    client = MlflowClient()
    for model in client.search_registered_models():
        assert "champion" not in model.aliases, model


def test_main_exits_non_zero_when_no_answer_parses(tmp_path):
    """The README's command itself, as a process: it fails, says what to check, and the train run is FAILED."""
    store = tmp_path / "store"
    overrides = [
        *isolated_overrides(tmp_path),
        *SMALL,
        "optimizer=labeled_fewshot",  # no LM call in compile: the dev evaluation is where it shows
        "lm._target_=tests.fakes.fake_lm",
        "+lm.garbage=true",
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.main", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0, done.stdout[-2000:]
    assert "NoUsableAnswers: all 16 dev rows failed to parse: AdapterParseError" in done.stderr
    assert "check the adapter" in done.stderr
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FAILED" and "model_uri" not in run.data.tags
    assert run.data.tags["error"].startswith("NoUsableAnswers: all 16 dev rows failed to parse: AdapterParseError")
    assert client.search_registered_models() == []


@pytest.mark.parametrize("optimizer", ["labeled_fewshot", "bootstrap"])
def test_no_run_finishes_and_nothing_is_registered(make_cfg, optimizer):
    """The train stage fails either way: at the dev evaluation, or in the optimiser's own LM calls."""
    with pytest.raises(NoUsableAnswers, match="check the adapter"):
        run_main(garbled(make_cfg("main", [f"optimizer={optimizer}"])))
    (run,) = runs()
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("NoUsableAnswers: ")
    assert "score/dev" not in run.data.metrics
    assert MlflowClient().search_registered_models() == []


def test_a_model_that_mostly_does_not_parse_is_never_the_first_champion(make_cfg):
    """Some answers parse, so training finishes (an unparsed answer is a wrong one), but more than
    registry.gate.max_error_rate of them did not: registered as challenger, never champion."""
    result = train(garbled(make_cfg("train", ["optimizer=none"]), ["refund", "cancel", "seat"]))
    run = MlflowClient().get_run(result.run_id)
    unparsed, examples = run.data.metrics["dev/parse_failures"], run.data.metrics["dev/examples"]
    assert run.info.status == "FINISHED" and run.data.metrics["dev/errors"] == 0
    assert 0.1 < unparsed / examples < 1
    registered = register(make_cfg("register"), run_id=result.run_id)
    assert not registered.promoted
    why = f"{int(unparsed)} of {int(examples)} of the challenger's answers failed or did not parse"
    assert why in registered.reason
    assert "registry.gate.max_error_rate=0.1" in registered.reason
    no_champion()
    version = MlflowClient().get_model_version(registered.name, registered.version)
    assert version.aliases == ["challenger"]
    # a looser limit lets the same results through
    again = register(make_cfg("register", ["registry.gate.max_error_rate=0.9"]), run_id=result.run_id)
    assert again.promoted and again.reason == "no current champion"
