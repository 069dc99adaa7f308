"""Plotly figures for an evaluation, as one self-contained HTML page (plotly.js inlined, so the
tracking UI shows it offline): confusion matrix and per-class accuracy for classification, and the
latency distribution.
"""

from __future__ import annotations

import pandas as pd


def classification_figures(table: pd.DataFrame, labels: list[str]):
    import plotly.express as px
    import plotly.graph_objects as go

    expected = table["expected"].astype(str)
    predicted = table["predicted"].fillna("<no answer>").astype(str)
    cols = labels + sorted(set(predicted) - set(labels))
    counts = pd.crosstab(expected, predicted).reindex(index=labels, columns=cols, fill_value=0)
    confusion = go.Figure(
        go.Heatmap(z=counts.values, x=cols, y=labels, colorscale="Blues", text=counts.values, texttemplate="%{text}")
    )
    confusion.update_layout(
        title="Confusion matrix (rows: expected, columns: predicted)",
        height=600,
        width=800,
        yaxis={"autorange": "reversed"},
    )
    per_class = table.assign(expected=expected).groupby("expected")["correct"].agg(["mean", "count"])
    per_class = per_class.reindex(labels).reset_index()
    bars = px.bar(
        per_class,
        x="expected",
        y="mean",
        text="count",
        range_y=[0, 1.05],
        labels={"expected": "class", "mean": "accuracy", "count": "examples"},
        title="Per-class accuracy (bar label: examples)",
    )
    latency = px.histogram(table, x="latency_s", nbins=30, title="Latency per example (s)")
    return [confusion, bars, latency]


def figures_html(figures, title: str, summary: pd.DataFrame | None = None) -> str:
    parts = [f"<html><head><meta charset='utf-8'><title>{title}</title></head><body><h2>{title}</h2>"]
    if summary is not None:
        parts.append(summary.to_html(index=False))
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    return "".join(parts)
