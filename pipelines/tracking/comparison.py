"""The comparison a sweep's parent run holds: a table and a plotly chart of its child runs.

One row per child (optimiser): baseline and optimised scores, gain, LM calls, tokens, cost and wall
time. The chart plots the optimised score against LM calls, tokens and wall time, the baseline drawn
as a dashed line. Written as one self-contained HTML file (plotly.js inlined: the tracking UI shows
it offline) plus the table as JSON.
"""

from __future__ import annotations

import pandas as pd
from mlflow import MlflowClient

from pipelines.tracking.html_report import PlotlySource, figures_html, plotly_js_source

COLUMNS = {
    "tags.optimizer": "optimizer",
    "tags.mlflow.runName": "run",
    "status": "status",
    "metrics.baseline/{split}": "baseline",  # names: pipelines.tracking.metric_names
    "metrics.score/{split}": "score",
    "metrics.gain/{split}": "gain",
    "metrics.compile/lm_calls": "lm_calls",
    "metrics.compile/input_tokens": "input_tokens",
    "metrics.compile/output_tokens": "output_tokens",
    "metrics.compile/cost_usd": "cost_usd",
    "metrics.wall_s/compile": "compile_s",
    "tags.stopped_by_budget": "stopped_by_budget",
    "run_id": "run_id",
}


def child_runs(parent_run_id: str) -> pd.DataFrame:
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    rows = []
    for r in runs:
        row = {"run_id": r.info.run_id, "status": r.info.status}
        row |= {f"tags.{k}": v for k, v in r.data.tags.items()}
        row |= {f"metrics.{k}": v for k, v in r.data.metrics.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(runs: pd.DataFrame, split: str) -> pd.DataFrame:
    cols = {k.format(split=split): v for k, v in COLUMNS.items()}
    table = pd.DataFrame({new: runs[old] if old in runs else None for old, new in cols.items()})
    table["tokens"] = table["input_tokens"].fillna(0) + table["output_tokens"].fillna(0)
    return table.sort_values("score", ascending=False, na_position="last").reset_index(drop=True)


def comparison_html(table: pd.DataFrame, split: str, title: str, plotly: PlotlySource | None = None) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=("LM calls", "tokens", "compile wall time (s)"))
    for col, x in enumerate(("lm_calls", "tokens", "compile_s"), start=1):
        fig.add_trace(
            go.Scatter(
                x=table[x],
                y=table["score"],
                mode="markers+text",
                text=table["optimizer"],
                textposition="top center",
                marker={"size": 12},
                name=x,
                showlegend=False,
            ),
            row=1,
            col=col,
        )
        baseline = table["baseline"].dropna()
        if len(baseline):
            fig.add_hline(y=float(baseline.mean()), line_dash="dash", annotation_text="baseline", row=1, col=col)
    fig.update_yaxes(title_text=f"{split} score", range=[0, 1.05])
    fig.update_layout(title=title, height=450, width=1300)
    shown = table.drop(columns=["input_tokens", "output_tokens"]).round(4)
    return figures_html([fig], title, shown, plotly)  # plotly.js once per experiment, as the eval reports


def log_comparison(parent_run_id: str, split: str) -> pd.DataFrame:
    """Write the comparison into the parent run: `comparison.html`, `comparison.json`, best-score metrics."""
    client = MlflowClient()
    runs = child_runs(parent_run_id)
    if runs.empty:
        return pd.DataFrame()
    table = comparison_table(runs, split)
    plotly = plotly_js_source(client.get_run(parent_run_id).info.experiment_id, parent_run_id, report_dir="")
    title = f"Optimiser comparison ({split} split)"
    client.log_text(parent_run_id, comparison_html(table, split, title, plotly), "comparison.html")
    client.log_text(parent_run_id, table.to_json(orient="records", indent=2), "comparison.json")
    scored = table.dropna(subset=["score"])
    if len(scored):
        best = scored.iloc[0]
        client.log_metric(parent_run_id, f"best/{split}", float(best["score"]))
        client.set_tag(parent_run_id, "best_optimizer", str(best["optimizer"]))
        client.set_tag(parent_run_id, "best_run_id", str(best["run_id"]))
    return table
