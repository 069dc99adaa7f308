"""Scores on the logged model itself, per dataset: what the model's page and `search_logged_models` show.

A run's `score/dev` describes the run; the same number logged with `model_id=` and `dataset=` describes
the model, on exactly that split's data (name + digest), so models compare per dataset across runs:

    >>> mlflow.search_logged_models(datasets=[{"dataset_name": "travel_intents-test"}],
    ...                             order_by=[{"field_name": "metrics.score/test"}])   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow

from pipelines.data.splits import Splits
from pipelines.tracking import metric_names as names


def score_keys(split: str) -> tuple[str, str, str]:
    """The run metrics `EvalOutcome.metrics` writes for a split: score and its 95% bootstrap interval."""
    return names.score(split), names.ci_low(split), names.ci_high(split)


def log_model_score(model_id: str, splits: Splits, split: str, score: float, low: float, high: float) -> None:
    """`score/<split>` and its interval, against the model and the split's dataset (in the active run)."""
    dataset = splits.mlflow_dataset(split)
    for key, value in zip(score_keys(split), (score, low, high), strict=True):
        mlflow.log_metric(key, value, model_id=model_id, dataset=dataset)


def log_model_scores_from_run(model_id: str, splits: Splits, split_names: list[str]) -> None:
    """Copy the active run's split scores onto the model it logged.

    train/optimize score the program before the model exists (its URI is made by logging it), so the
    scores already on the run are attached once the model id is known; a split not scored is skipped."""
    metrics = mlflow.get_run(mlflow.active_run().info.run_id).data.metrics
    for split in split_names:
        keys = score_keys(split)
        if all(k in metrics for k in keys):
            log_model_score(model_id, splits, split, *(metrics[k] for k in keys))


@dataclass
class ModelScore:
    score: float
    low: float
    high: float
    run_id: str  # the run that measured it


def model_score(model_id: str, split: str, dataset_digest: str | None = None) -> ModelScore | None:
    """The latest score of a logged model on a split (on exactly that data when `dataset_digest` is given)."""
    found: dict[str, object] = {}
    for metric in sorted(mlflow.get_logged_model(model_id).metrics or [], key=lambda m: m.timestamp):
        if dataset_digest is None or metric.dataset_digest == dataset_digest:
            found[metric.key] = metric
    keys = score_keys(split)
    if not all(k in found for k in keys):
        return None
    score, low, high = (found[k] for k in keys)
    return ModelScore(score.value, low.value, high.value, score.run_id)
