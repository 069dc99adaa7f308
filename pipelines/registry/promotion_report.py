"""A self-contained HTML page comparing two models on the same examples (e.g. challenger vs champion):
scores with bootstrap intervals, the paired test, latency, and every example where they disagree.

Generic over the task: inputs are the table's plain columns, outputs its `expected.*` / `predicted.*`
columns, and examples are paired by `row_id`. `register` logs it as `promotion_report.html`.
"""

from __future__ import annotations

import html

import pandas as pd

from pipelines.evaluation.stats import bootstrap_ci
from pipelines.registry.gate import Decision

_NOT_INPUTS = {"row_id", "score", "latency_s", "error", "parse_error"}


def _summary_row(name: str, table: pd.DataFrame) -> dict:
    score, low, high = bootstrap_ci(table["score"])
    lat = table["latency_s"].dropna() if "latency_s" in table else pd.Series(dtype=float)
    return {
        "model": name,
        "examples": len(table),
        "score": f"{score:.3f}",
        "95% CI": f"[{low:.3f}, {high:.3f}]",
        "latency p50 (s)": f"{lat.median():.3f}" if len(lat) else "",
        "latency p95 (s)": f"{lat.quantile(0.95):.3f}" if len(lat) else "",
    }


def input_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in _NOT_INPUTS and not c.startswith(("expected.", "predicted."))]


def disagreements(a_name: str, a: pd.DataFrame, b_name: str, b: pd.DataFrame) -> pd.DataFrame:
    """One row per example the two models score differently: inputs, expected, both predictions, scores."""
    outputs = [c[len("expected.") :] for c in a.columns if c.startswith("expected.")]
    left = a[
        [
            "row_id",
            *input_columns(a),
            *[f"expected.{o}" for o in outputs],
            *[f"predicted.{o}" for o in outputs],
            "score",
        ]
    ]
    right = b[["row_id", *[f"predicted.{o}" for o in outputs if f"predicted.{o}" in b], "score"]]
    merged = left.merge(right, on="row_id", suffixes=(f" ({a_name})", f" ({b_name})"))
    return merged[merged[f"score ({a_name})"] != merged[f"score ({b_name})"]]


def comparison_report(
    a_name: str, a: pd.DataFrame | None, b_name: str, b: pd.DataFrame | None, decision: Decision | None = None
) -> str:
    rows = [_summary_row(n, t) for n, t in ((a_name, a), (b_name, b)) if t is not None]
    parts = [
        "<html><head><meta charset='utf-8'><title>Model comparison</title>",
        "<style>body{font-family:sans-serif;margin:2em} td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
        " .win{background:#e6ffe6} .loss{background:#ffe6e6}</style></head><body>",
        f"<h2>{html.escape(a_name)} vs {html.escape(b_name)}</h2>",
        pd.DataFrame(rows).to_html(index=False) if rows else "<p>No results were scored (first registration).</p>",
    ]
    if decision is not None:
        parts.append(f"<h3>Decision: {'promote' if decision.promote else 'keep the champion'}</h3>")
        parts.append(f"<p>{html.escape(decision.reason)}</p>")
    if a is not None and b is not None:
        diff = disagreements(a_name, a, b_name, b)
        parts.append(f"<h3>Examples where they score differently ({len(diff)})</h3><table>")
        parts.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in diff.columns) + "</tr>")
        for _, r in diff.iterrows():
            cls = "win" if r[f"score ({a_name})"] > r[f"score ({b_name})"] else "loss"
            parts.append(f"<tr class='{cls}'>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>")
        parts.append(f"</table><p>green: {html.escape(a_name)} scored higher; red: {html.escape(b_name)} did</p>")
    parts.append("</body></html>")
    return "".join(parts)
