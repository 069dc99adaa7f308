"""A self-contained HTML page comparing two models on the same examples (e.g. challenger vs champion):
scores with bootstrap intervals, the paired test, latency, and every example where they disagree.

`register` logs it as `promotion_report.html` in its run and, with `report_path=...`, writes it there too.
"""

from __future__ import annotations

import html

import pandas as pd

from .gate import Decision
from .stats import bootstrap_ci


def _summary_row(name: str, table: pd.DataFrame) -> dict:
    score, low, high = bootstrap_ci(table["correct"])
    lat = table["latency_s"].dropna() if "latency_s" in table else pd.Series(dtype=float)
    return {
        "model": name,
        "examples": len(table),
        "score": f"{score:.3f}",
        "95% CI": f"[{low:.3f}, {high:.3f}]",
        "latency p50 (s)": f"{lat.median():.3f}" if len(lat) else "",
        "latency p95 (s)": f"{lat.quantile(0.95):.3f}" if len(lat) else "",
    }


def comparison_report(
    a_name: str,
    a: pd.DataFrame,
    b_name: str,
    b: pd.DataFrame | None,
    decision: Decision | None = None,
    input_column: str = "text",
) -> str:
    rows = [_summary_row(a_name, a)] + ([_summary_row(b_name, b)] if b is not None else [])
    parts = [
        "<html><head><meta charset='utf-8'><title>Model comparison</title>",
        "<style>body{font-family:sans-serif;margin:2em} td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
        " .win{background:#e6ffe6} .loss{background:#ffe6e6}</style></head><body>",
        f"<h2>{html.escape(a_name)} vs {html.escape(b_name)}</h2>",
        pd.DataFrame(rows).to_html(index=False),
    ]
    if decision is not None:
        parts.append(f"<h3>Decision: {'promote' if decision.promote else 'keep the champion'}</h3>")
        parts.append(f"<p>{html.escape(decision.reason)}</p>")
    if b is not None and len(a) == len(b):
        merged = pd.DataFrame(
            {
                input_column: a[input_column] if input_column in a else range(len(a)),
                "expected": a["expected"],
                a_name: a["predicted"],
                b_name: b["predicted"].values,
                "a_correct": a["correct"].values,
                "b_correct": b["correct"].values,
            }
        )
        diff = merged[merged["a_correct"] != merged["b_correct"]]
        parts.append(f"<h3>Examples where they disagree on correctness ({len(diff)})</h3><table>")
        parts.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in merged.columns[:4]) + "</tr>")
        for _, r in diff.iterrows():
            cls = "win" if r["a_correct"] > r["b_correct"] else "loss"
            cells = "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in merged.columns[:4])
            parts.append(f"<tr class='{cls}'>{cells}</tr>")
        parts.append(f"</table><p>green: only {html.escape(a_name)} right; red: only {html.escape(b_name)} right</p>")
    parts.append("</body></html>")
    return "".join(parts)
