"""A registered version's description, in Markdown: the decision, both models' scores, and where they came from.

The registry UI shows a version's description in full and renders it as Markdown (tags are cut off), so
this is where a version tells its story:

    promoted: significant improvement at alpha=0.05: challenger 0.812 vs champion 0.700 on 80 paired
    examples (...). v3 is champion. Trained by run 9b2e... (dev split, data 4f0c...).

    | model | dev score [95% CI] | test score [95% CI] |
    |---|---|---|
    | challenger v3 | 0.812 [0.700, 0.900] (n=80) | 0.787 [0.700, 0.863] |
    | champion v2 | 0.700 [0.588, 0.800] (n=80) | 0.637 [0.525, 0.738] |

    Runs: [register run](#/experiments/1/runs/...) (`promotion_report.html`), [source run](...),
    [challenger v3's test evaluation](...), [champion v2's test evaluation](...)

Links are relative to the UI (`#/experiments/<id>/runs/<run_id>`), so they work on any host serving it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from mlflow import MlflowClient

from pipelines.evaluation.stats import bootstrap_ci
from pipelines.tracking.logged_model_metrics import ModelScore, model_score

HELD_OUT_SPLIT = "test"  # reported beside the gate split when the model was evaluated on it


def run_link(run_id: str, label: str, client: MlflowClient | None = None) -> str:
    experiment_id = (client or MlflowClient()).get_run(run_id).info.experiment_id
    return f"[{label}](#/experiments/{experiment_id}/runs/{run_id})"


def _table_score(table: pd.DataFrame | None) -> str:
    if table is None or table.empty:
        return "not scored"
    mean, low, high = bootstrap_ci(table["score"])
    return f"{mean:.3f} [{low:.3f}, {high:.3f}] (n={len(table)})"


def _scored(score: ModelScore | None) -> str:
    return f"{score.score:.3f} [{score.low:.3f}, {score.high:.3f}]" if score else "not scored"


def _logged_score(model: CardModel, split: str, digest: str | None) -> ModelScore | None:
    """What the model's own page holds for this split's data (see `pipelines.tracking.logged_model_metrics`)."""
    return model_score(model.model_id, split, digest) if model.model_id and digest else None


@dataclass
class CardModel:
    """One row of the table: a model's label, its per-example results on the gate split, its logged model."""

    label: str
    table: pd.DataFrame | None
    model_id: str | None


def model_id_of(source: str | None) -> str | None:
    """The logged model behind a version's `source` (`models:/m-<id>` in MLflow 3), if that is what it is."""
    if source and source.startswith("models:/m-"):
        return source[len("models:/") :].split("/", 1)[0]
    return None


def version_card(
    *,
    version: str,
    decision: str,
    promoted: bool,
    reason: str,
    champion_version: str | None,
    split: str,
    models: list[CardModel],
    register_run_id: str,
    source_run_id: str,
    gate_digest: str | None = None,
    held_out_digest: str | None = None,
) -> str:
    """The Markdown description of registered version `version` after `register` decided about it.

    It opens with the decision and its reason in one sentence (`decision` is the `promotion.decision` tag)."""
    roles = f"v{version} is champion" if promoted else f"v{version} is challenger; v{champion_version} stays champion"
    headline = (
        f"{decision.replace('_', ' ')}: {reason}. {roles}. "
        f"Trained by run {source_run_id} ({split} split, data {gate_digest})."
    )
    client = MlflowClient()
    links = [
        run_link(register_run_id, "register run", client) + " (`promotion_report.html`)",
        run_link(source_run_id, "source run", client),
    ]
    # The held-out column appears when either model was evaluated on exactly this test data.
    held_out = {m.label: _logged_score(m, HELD_OUT_SPLIT, held_out_digest) for m in models}
    show_test = any(held_out.values())
    header = f"| model | {split} score [95% CI] |" + (f" {HELD_OUT_SPLIT} score [95% CI] |" if show_test else "")
    rows = [header, "|---|---|" + ("---|" if show_test else "")]
    for m in models:
        gate = _table_score(m.table) if m.table is not None else _scored(_logged_score(m, split, gate_digest))
        rows.append(f"| {m.label} | {gate} |" + (f" {_scored(held_out[m.label])} |" if show_test else ""))
        if held_out[m.label]:
            links.append(run_link(held_out[m.label].run_id, f"{m.label}'s {HELD_OUT_SPLIT} evaluation", client))
    return "\n".join([headline, "", *rows, "", "Runs: " + ", ".join(links)])
