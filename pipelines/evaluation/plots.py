"""Plotly figures for an evaluation: per label field a confusion matrix and per-class accuracy, and the latency
distribution (what MLflow's own views do not draw). `pipelines.tracking.html_report` lays them out as one page.

    >>> figures = [*classification_figures(table, "label", labels), latency_figure(table)]   # doctest: +SKIP
"""

from __future__ import annotations

import pandas as pd


def classification_figures(table: pd.DataFrame, field: str, labels: list[str]):
    import plotly.express as px
    import plotly.graph_objects as go

    expected = table[f"expected.{field}"].astype(str)
    predicted = table[f"predicted.{field}"].fillna("<no answer>").astype(str)
    cols = labels + sorted(set(predicted) - set(labels))
    counts = pd.crosstab(expected, predicted).reindex(index=labels, columns=cols, fill_value=0)
    confusion = go.Figure(
        go.Heatmap(z=counts.values, x=cols, y=labels, colorscale="Blues", text=counts.values, texttemplate="%{text}")
    )
    confusion.update_layout(
        title=f"{field}: confusion matrix (rows: expected, columns: predicted)",
        height=600,
        width=800,
        yaxis={"autorange": "reversed"},
    )
    correct = (expected == predicted).astype(float)
    per_class = correct.groupby(expected).agg(["mean", "count"]).reindex(labels).rename_axis("expected").reset_index()
    bars = px.bar(
        per_class,
        x="expected",
        y="mean",
        text="count",
        range_y=[0, 1.05],
        labels={"expected": "class", "mean": "accuracy", "count": "examples"},
        title=f"{field}: per-class accuracy (bar label: examples)",
    )
    return [confusion, bars]


def latency_figure(table: pd.DataFrame):
    import plotly.express as px

    return px.histogram(table, x="latency_s", nbins=30, title="Latency per example (s)")
