"""Read an experiment back: a leaderboard of model-producing runs, its Pareto front, a champion's lineage.

Used by `notebooks/compare_runs.ipynb`; plain functions so they are tested like the rest.

    >>> board = leaderboard("dspy-pipelines")                       # doctest: +SKIP
    >>> board[["run_name", "optimizer", "score", "cost_usd"]].head()  # doctest: +SKIP
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow import MlflowClient


def _col(runs: pd.DataFrame, name: str, default=None) -> pd.Series:
    return runs[name] if name in runs else pd.Series([default] * len(runs), index=runs.index)


def leaderboard(experiment: str, split: str = "dev") -> pd.DataFrame:
    """One row per finished train/optimize run: score on `split`, cost, latency, optimiser, time."""
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "entry_point", "optimizer", "score"])
    runs = runs[_col(runs, "tags.entry_point").isin(["train", "optimize"])]

    def total(name: str) -> pd.Series:  # compile + scoring on `split`
        return _col(runs, f"metrics.{split}/{name}", 0).fillna(0) + _col(runs, f"metrics.compile/{name}", 0).fillna(0)

    lm_calls, cost = total("lm_calls"), total("cost_usd")
    board = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "run_name": _col(runs, "tags.mlflow.runName"),
            "entry_point": _col(runs, "tags.entry_point"),
            "optimizer": _col(runs, "tags.optimizer"),
            "task": _col(runs, "tags.task"),
            "score": _col(runs, f"metrics.score/{split}"),
            "ci_low": _col(runs, f"metrics.score/{split}/ci_low"),
            "ci_high": _col(runs, f"metrics.score/{split}/ci_high"),
            "lm_calls": lm_calls,
            "cost_usd": cost,
            "latency_p50_s": _col(runs, f"metrics.{split}/latency_p50_s"),
            "start_time": runs["start_time"],
        }
    )
    return board.sort_values(["score", "start_time"], ascending=[False, False]).reset_index(drop=True)


def pareto_front(board: pd.DataFrame, cost: str = "lm_calls", score: str = "score") -> pd.DataFrame:
    """Runs no other run beats on both axes (higher score AND lower or equal cost)."""
    rows = board.dropna(subset=[score]).sort_values([cost, score], ascending=[True, False])
    front, best = [], float("-inf")
    for _, row in rows.iterrows():
        if row[score] > best:
            front.append(row)
            best = row[score]
    return pd.DataFrame(front).reset_index(drop=True)


def lineage(model_name: str, alias: str = "champion") -> dict[str, str]:
    """Where the aliased version came from: version, source run, optimiser, data, commit, decision."""
    client = MlflowClient()
    version = client.get_model_version_by_alias(model_name, alias)
    tags = version.tags or {}
    run = client.get_run(version.run_id) if version.run_id else None
    return {
        "model": f"{model_name} v{version.version} (@{alias})",
        "source_run": tags.get("source_run_id", version.run_id or ""),
        "source_run_name": run.data.tags.get("mlflow.runName", "") if run else "",
        "optimizer": tags.get("optimizer", ""),
        "lm": tags.get("lm", ""),
        "data_digest": tags.get("data_digest", ""),
        "git_commit": tags.get("git_commit", ""),
        "promotion": tags.get("promotion.reason", ""),
    }
