"""notebooks/compare_runs.ipynb runs top to bottom against a store this test fills."""

from __future__ import annotations

import nbformat
import pandas as pd
from mlflow import MlflowClient
from nbclient import NotebookClient

from pipelines.config import PROJECT_ROOT
from pipelines.register import register
from pipelines.tracking.leaderboard import leaderboard, lineage, pareto_front
from pipelines.train import train


def test_pareto_front_keeps_only_undominated_runs():
    board = pd.DataFrame({"lm_calls": [10, 20, 30, 15], "score": [0.5, 0.7, 0.6, 0.5]})
    front = pareto_front(board)
    assert list(zip(front["lm_calls"], front["score"], strict=True)) == [(10, 0.5), (20, 0.7)]


def test_notebook_runs_against_a_filled_store(make_cfg, monkeypatch):
    cfg = make_cfg("main", ["optimizer=labeled_fewshot"])
    trained = train(cfg)
    reg = register(cfg, run_id=trained.run_id)
    board = leaderboard(cfg.tracking.experiment)
    assert board.loc[0, "run_id"] == trained.run_id and board.loc[0, "optimizer"] == "labeled_fewshot"
    assert board.loc[0, "score"] == trained.selection_score  # the dev score
    assert board.loc[0, "task"] == "travel_intents"
    champion = lineage(cfg.registry.name)
    assert champion["source_run"] == trained.run_id
    assert champion["model"] == f"{reg.name} v{reg.version} (@champion)"
    assert champion["optimizer"] == "labeled_fewshot" and champion["promotion"] == "no current champion"
    assert champion["data_digest"] == MlflowClient().get_run(trained.run_id).data.tags["data.digest.dev"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(cfg.tracking.uri))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", str(cfg.tracking.experiment))
    monkeypatch.setenv("MODEL_NAME", reg.name)
    nb = nbformat.read(PROJECT_ROOT / "notebooks" / "compare_runs.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(PROJECT_ROOT)}}
    ).execute()
    outputs = "".join(str(o) for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "labeled_fewshot" in outputs and trained.run_id in outputs
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
