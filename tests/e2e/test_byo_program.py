"""Bring your own program: the README's worked example, run as a user would, on the real embedded model.

A two-stage program in a package this repository does not know (`examples/byo/ticket_router`), with two
inputs and an intermediate field, plus a task and a program YAML in the user's own config directory.
Both are copied OUTSIDE the checkout; `main` runs from there with the package on PYTHONPATH. The
registered champion is then served with PYTHONPATH unset, from a directory where the package is not
importable, and answers a multi-row request.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from pipelines.config import PROJECT_ROOT
from tests.helpers import serving_champion

pytestmark = pytest.mark.slow
TEAMS = {"account", "billing", "shipping", "technical"}


def test_users_own_two_stage_program_trains_registers_and_serves(tmp_path):
    user = tmp_path / "user_project"
    shutil.copytree(PROJECT_ROOT / "examples" / "byo", user)
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    cmd = [
        sys.executable, "-m", "pipelines.main", "--config-dir", str(user / "conf"),
        "task=tickets", "program=router", "optimizer=labeled_fewshot",
        "task.data.train_size=4", "task.data.val_size=2", "task.data.dev_size=4", "task.data.test_size=3",
        f"tracking.uri={uri}", f"tracking.artifact_location={store}/artifacts",
        f"paths.dspy_cache_dir={tmp_path}/dspy_cache", f"paths.output_dir={tmp_path}/outputs",
        "tracking.experiment=byo", "eval.display_progress=false",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=user, env=env | {"PYTHONPATH": str(user)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    champion = client.get_model_version_by_alias("tickets", "champion")
    info = mlflow.models.get_model_info(f"models:/tickets/{champion.version}")
    # The model's signature is the task's contract: the intermediate `summary` is no input.
    assert [c.name for c in info.signature.inputs.inputs] == ["ticket", "tier"]
    assert [c.name for c in info.signature.outputs.inputs] == ["team"]

    rows = [
        {"ticket": "My parcel never arrived and tracking is stuck", "tier": "pro"},
        {"ticket": "I was charged twice for my subscription", "tier": "free"},
        {"ticket": "I cannot log in to my account", "tier": "enterprise"},
    ]
    with serving_champion(uri, overrides=["registry.name=tickets"], env=env) as url:
        reply = requests.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=300)
        assert reply.status_code == 200, reply.text
        predictions = reply.json()["predictions"]
        assert len(predictions) == len(rows)
        assert all(set(p) == {"team"} and p["team"] in TEAMS for p in predictions), predictions
        bad = requests.post(f"{url}/invocations", json={"dataframe_records": [{"ticket": "hi"}]}, timeout=60)
        assert bad.status_code == 400 and "tier" in bad.text

    # Each stage of the user's program shows up as its own span in the evaluation traces.
    runs = mlflow.search_runs(experiment_names=["byo"], filter_string="tags.entry_point = 'train'")
    run = runs.iloc[0]
    traces = mlflow.search_traces(locations=[run["experiment_id"]], run_id=run["run_id"], return_type="list")
    assert traces, "evaluation left no traces"
    names = [s.name for s in traces[0].data.spans]
    assert sum(n.startswith("Predict") for n in names) >= 2, names
