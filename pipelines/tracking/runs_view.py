"""The experiment's runs table opening on the headline scores, as a view the MLflow UI shares.

The runs table's default columns are Source, Models and Dataset; the scores hide behind "Show more columns
(90 total)". MLflow's UI keeps a shared view as the experiment tag `mlflow.sharedViewState.<key>` (what its
"Share" button writes: the table's columns, sort and filters as JSON) and opens it from the experiment's URL
with `?viewStateShareKey=<key>`. Entry points write one, `headline`, and print its link: the table then
opens with `score/dev` and `score/test` with their intervals, the gate's p-value, the optimiser, program and
LM, newest first.
A user's own saved view is untouched (the UI offers to override it, never does so by itself).

    >>> write_headline_view(experiment_id)                       # doctest: +SKIP
    >>> headline_url(experiment_id, "http://127.0.0.1:5000")
    'http://127.0.0.1:5000/#/experiments/1/runs?viewStateShareKey=headline'
"""

from __future__ import annotations

import json

from mlflow import MlflowClient

from pipelines.tracking import metric_names as names

VIEW_KEY = "headline"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"  # the tag MLflow's UI reads a shared view from
SPLITS = ("dev", "test")  # the splits entry points score (train and val are for optimisers)


def _metric(name: str) -> str:
    return f"metrics.`{name}`"  # the UI's column id for a metric (attributes.`Models`, params.`x` alike)


def headline_columns(splits=SPLITS) -> list[str]:
    metrics = [m for split in splits for m in (names.score(split), names.ci_low(split), names.ci_high(split))]
    return [
        "attributes.`Models`",
        *map(_metric, metrics),
        _metric(names.GATE_P_VALUE),
        "params.`optimizer.name`",
        "params.`program._target_`",
        "params.`lm.model`",
    ]


def headline_state(splits=SPLITS) -> dict:
    columns = headline_columns(splits)
    return {
        "searchFilter": "",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": columns,
        "columnOrder": columns,
    }


def write_headline_view(experiment_id: str, client: MlflowClient | None = None) -> None:
    (client or MlflowClient()).set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(headline_state()))


def headline_url(experiment_id: str, base: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
