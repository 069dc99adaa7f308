"""`register`: register a run's model as `challenger`; promote it to `champion` only on evidence.

    python -m pipelines.register                      # the latest finished train/optimize run
    python -m pipelines.register run_id=<id>
    python -m pipelines.register registry.gate.alpha=0.1
    python -m pipelines.register force=true           # promote regardless (recorded as forced)

Challenger and champion are compared on the same examples (`eval.split`, dev by default, same data
digest) with a paired test (`pipelines.gate`). Per-example results already on record for that digest
are reused; missing ones are measured now and recorded for next time. The decision, both scores,
the p-value and the interval are tagged on the new version and logged in this run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
from hydra.utils import instantiate
from mlflow import MlflowClient
from omegaconf import DictConfig

from .cli import hydra_main
from .evaluation import evaluate_split
from .gate import decide
from .registry import get_alias, latest_model_run, load_program, record_predictions, recorded_predictions
from .report import comparison_report
from .session import resolve_metric, start_session
from .tracking import configure_tracking, git_commit, tracked_run

log = logging.getLogger(__name__)


@dataclass
class RegisterResult:
    run_id: str
    name: str
    version: str
    promoted: bool
    reason: str
    challenger_score: float
    champion_score: float | None
    p_value: float | None = None


def register(
    cfg: DictConfig,
    run_id: str | None = None,
    split: str | None = None,
    force: bool = False,
    report_path: str | None = None,
):
    start_session(cfg)
    split = split or cfg.eval.split
    name = cfg.registry.name
    experiment_id = configure_tracking(cfg.tracking)
    source = MlflowClient().get_run(run_id) if run_id else latest_model_run(experiment_id, cfg.task.name)
    model_uri = source.data.tags.get("model_uri") or f"runs:/{source.info.run_id}/model"

    with tracked_run(cfg, "register", run_name=cfg.run_name or f"register-{name}") as run:
        splits = instantiate(cfg.task.data)
        digest = splits.log_to_mlflow()[split]
        metric = resolve_metric(cfg.task.metric)
        client = MlflowClient()

        def results_of(version, role: str):
            """Per-example results of `version` on the split: on record, or measured now."""
            table = recorded_predictions(version, split, digest)
            if table is None:
                log.info("scoring %s v%s on %s (no results on record for this data)", name, version.version, split)
                loaded = load_program(f"models:/{version.name}/{version.version}")
                outcome = evaluate_split(cfg, loaded.program, splits, split, metric, loaded.lm, loaded.adapter)
                table, path = outcome.table, f"eval/{role}_v{version.version}_{split}_predictions.json"
                mlflow.log_table(table, artifact_file=path)
                record_predictions(version, split, digest, run.info.run_id, path, outcome.score)
            return table

        champion = get_alias(name, cfg.registry.champion_alias)
        version = mlflow.register_model(model_uri, name)
        src_tags = source.data.tags
        for key, value in {
            "task": src_tags.get("task", cfg.task.name),
            "optimizer": src_tags.get("optimizer", "unknown"),
            "lm": src_tags.get("lm", "unknown"),
            "source_run_id": source.info.run_id,
            "data_digest": digest,
            "data_split": split,
            "git_commit": src_tags.get("git_commit") or git_commit(),
        }.items():
            client.set_model_version_tag(name, version.version, key, str(value))
        client.set_registered_model_alias(name, cfg.registry.challenger_alias, version.version)

        challenger_table = results_of(version, "challenger")
        champion_table = results_of(champion, "champion") if champion is not None else None
        gate = cfg.registry.gate
        decision = decide(
            challenger_table,
            champion_table,
            alpha=gate.alpha,
            min_gain=gate.min_gain,
            force=force,
            required=list(gate.required),
            tolerance=gate.tolerance,
        )
        if decision.promote:
            client.set_registered_model_alias(name, cfg.registry.champion_alias, version.version)

        challenger_score = float(challenger_table["correct"].mean())
        champion_score = float(champion_table["correct"].mean()) if champion_table is not None else None
        tags = decision.tags() | {
            "promotion.forced": str(bool(force)).lower(),
            "promotion.split": split,
            "promotion.alpha": str(gate.alpha),
            "promotion.champion_version": str(champion.version) if champion else "none",
            "promotion.champion_score": f"{champion_score:.6f}" if champion_score is not None else "none",
            "promotion.challenger_score": f"{challenger_score:.6f}",
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        # The description is what the registry UI shows in full (tags are truncated there).
        description = (
            f"{tags['promotion.decision'].replace('_', ' ')}: {decision.reason}. "
            f"Trained by run {source.info.run_id} ({tags.get('promotion.split')} split, data {digest})."
        )
        client.update_model_version(name, version.version, description=description)
        mlflow.set_tags(tags | {"model_name": name, "model_version": str(version.version)})
        champion_name = f"champion v{champion.version}" if champion else "no champion"
        report = comparison_report(
            f"challenger v{version.version}", challenger_table, champion_name, champion_table, decision
        )
        mlflow.log_text(report, "promotion_report.html")
        if report_path:
            Path(report_path).write_text(report)
        mlflow.log_metric("challenger_score", challenger_score)
        if champion_score is not None:
            mlflow.log_metric("champion_score", champion_score)
            mlflow.log_metric("promotion_p_value", decision.test.p_value)
        log.info("%s v%s: %s (%s)", name, version.version, tags["promotion.decision"], decision.reason)
        return RegisterResult(
            run_id=run.info.run_id,
            name=name,
            version=str(version.version),
            promoted=decision.promote,
            reason=decision.reason,
            challenger_score=challenger_score,
            champion_score=champion_score,
            p_value=decision.test.p_value if decision.test else None,
        )


@hydra_main("register")
def main(cfg: DictConfig) -> None:
    register(cfg, run_id=cfg.run_id, force=cfg.force, report_path=cfg.report_path)


if __name__ == "__main__":
    main()
