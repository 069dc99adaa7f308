"""Plotly figures as one small HTML page logged to a run: an evaluation's report (`pipelines.evaluation.plots`),
a sweep's comparison (`pipelines.tracking.comparison`).

plotly.js (4.8 MB) is not inlined: it is logged once per experiment and plotly version, as a run artifact
(`report/plotly-<version>.min.mjs`, the first run that needs it; run tag `report.plotly_js`), and each report
(~50 KB) loads it from there. In the MLflow UI a report is a blob: page in a sandboxed frame, so a relative
path cannot reach the run's artifacts: the report loads plotly.js through the UI server's own `get-artifact`
route, and falls back to the file beside it (a downloaded copy of the holding run's artifacts). The `.mjs`
name is deliberate: MLflow serves `.js` artifacts as text/plain with `nosniff`, which a browser will not run.

    >>> src = plotly_js_source(experiment_id, run_id)                        # doctest: +SKIP
    >>> mlflow.log_text(figures_html(figures, "Evaluation of travel_intents v3 on test", summary, src),
    ...                 "eval/test_report.html")                             # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

import pandas as pd

PLOTLY_TAG = "report.plotly_js"  # run tag: this run's artifacts hold plotly.js of this version


@dataclass(frozen=True)
class PlotlySource:
    run_id: str  # the run whose artifacts hold plotly.js
    path: str  # its artifact path
    relative: str | None = None  # from the report to it, when both are in the same run


def plotly_js_source(experiment_id: str, run_id: str, report_dir: str = "eval") -> PlotlySource:
    """Where the reports of this experiment load plotly.js from: logged into `run_id` unless a live run of the
    experiment already holds this version."""
    import mlflow
    import plotly
    from plotly.offline import get_plotlyjs

    path = f"report/plotly-{plotly.__version__}.min.mjs"
    held = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{PLOTLY_TAG}` = '{plotly.__version__}'",
        max_results=1,
        output_format="list",
    )
    if held:
        holder = held[0].info.run_id
    else:
        holder = run_id
        mlflow.MlflowClient().log_text(run_id, get_plotlyjs(), path)
        mlflow.MlflowClient().set_tag(run_id, PLOTLY_TAG, plotly.__version__)
    depth = len([p for p in report_dir.split("/") if p])
    return PlotlySource(holder, path, "../" * depth + path if holder == run_id else None)


_LOADER = """
(function () {
  var figures = JSON.parse(document.getElementById("figures").textContent);
  var src = JSON.parse(document.getElementById("plotly-source").textContent);
  var urls = [];
  try {  // the MLflow UI shows a report as blob:<server origin>/<id>
    var origin = new URL(location.href.replace(/^blob:/, "")).origin;
    if (/^https?:/.test(origin)) {
      urls.push(origin + "/get-artifact?path=" + encodeURIComponent(src.path) + "&run_uuid=" + src.run_id);
    }
  } catch (e) {}
  if (src.relative) urls.push(src.relative);
  function draw() {
    figures.forEach(function (fig, i) { Plotly.newPlot("figure-" + i, fig.data, fig.layout); });
  }
  function load(i) {
    if (i >= urls.length) { document.getElementById("no-plotly").style.display = "block"; return; }
    var script = document.createElement("script");
    script.src = urls[i];
    script.onload = draw;
    script.onerror = function () { load(i + 1); };
    document.head.appendChild(script);
  }
  load(0);
})();
"""


def _json_script(element_id: str, value: str) -> str:
    safe = value.replace("</", "<\\/")  # no "</script>" inside the data
    return f"<script type='application/json' id='{element_id}'>{safe}</script>"


def figures_html(figures, title: str, summary: pd.DataFrame | None = None, plotly: PlotlySource | None = None) -> str:
    """The page: title, summary table, one div per figure; plotly.js from `plotly` (see the module docstring).
    Without a source the page inlines plotly.js (4.8 MB), as a file outside any run must."""
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"]
    parts.append(f"<h2>{html.escape(title)}</h2>")
    if summary is not None:
        parts.append(summary.to_html(index=False))
    if plotly is None:
        parts += [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
        return "".join(parts) + "</body></html>"
    missing = (
        f"plotly.js could not be loaded: it is artifact <code>{html.escape(plotly.path)}</code> of run "
        f"<code>{html.escape(plotly.run_id)}</code>."
    )
    parts.append(f"<p id='no-plotly' style='display:none'>{missing}</p>")
    parts += [f"<div id='figure-{i}'></div>" for i in range(len(figures))]
    parts.append(_json_script("figures", "[" + ",".join(fig.to_json() for fig in figures) + "]"))
    source = {"run_id": plotly.run_id, "path": plotly.path, "relative": plotly.relative}
    parts.append(_json_script("plotly-source", json.dumps(source)))
    parts.append(f"<script>{_LOADER}</script></body></html>")
    return "".join(parts)
