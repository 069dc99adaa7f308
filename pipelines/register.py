"""`register`: register a run's model as `challenger`; promote it to `champion` only on evidence.

    python -m pipelines.register                      # the latest finished train/optimize run
    python -m pipelines.register run_id=<id>
    python -m pipelines.register force=true           # promote regardless (recorded as forced)

The challenger and the current champion are compared on the same split (`eval.split`, dev by default)
with the same data digest. Scores already on record for that digest are reused; missing ones are
measured now. The decision, both scores and the reason are tagged on the new version and logged in
this run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
from hydra.utils import instantiate
from mlflow import MlflowClient
from omegaconf import DictConfig

from .cli import hydra_main
from .evaluation import evaluate_program
from .registry import cached_score, get_alias, latest_model_run, load_program, record_score
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


def decide(challenger: float, champion: float | None, force: bool) -> tuple[bool, str]:
    if force:
        return True, "forced by the user (force=true)"
    if champion is None:
        return True, "no current champion"
    if challenger > champion:
        return True, f"challenger {challenger:.4f} beats champion {champion:.4f}"
    return False, f"challenger {challenger:.4f} does not beat champion {champion:.4f}"


def register(cfg: DictConfig, run_id: str | None = None, split: str | None = None, force: bool = False):
    start_session(cfg)
    split = split or cfg.eval.split
    name = cfg.registry.name
    experiment_id = configure_tracking(cfg.tracking)
    source = MlflowClient().get_run(run_id) if run_id else latest_model_run(experiment_id, cfg.task.name)
    model_uri = source.data.tags.get("model_uri") or f"runs:/{source.info.run_id}/model"

    with tracked_run(cfg, "register", run_name=cfg.run_name or f"register-{name}") as run:
        splits = instantiate(cfg.task.data)
        digests = splits.log_to_mlflow()
        digest, examples = digests[split], splits.examples(split)
        metric = resolve_metric(cfg.task.metric)
        client = MlflowClient()

        def score_of(version) -> float:
            score = cached_score(version, split, digest)
            if score is None:
                loaded = load_program(f"models:/{version.name}/{version.version}")
                score = evaluate_program(
                    loaded.program,
                    examples,
                    metric,
                    lm=loaded.lm,
                    adapter=loaded.adapter,
                    num_threads=cfg.eval.num_threads,
                    target=splits.target,
                ).score
            record_score(version, split, digest, score)
            return score

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

        challenger_score = score_of(version)
        champion_score = score_of(champion) if champion is not None else None
        promoted, reason = decide(challenger_score, champion_score, force)
        if promoted:
            client.set_registered_model_alias(name, cfg.registry.champion_alias, version.version)

        decision = {
            "promotion.decision": "promoted" if promoted else "kept_champion",
            "promotion.reason": reason,
            "promotion.forced": str(bool(force)).lower(),
            "promotion.split": split,
            "promotion.champion_version": champion.version if champion else "none",
            "promotion.champion_score": f"{champion_score:.6f}" if champion_score is not None else "none",
            "promotion.challenger_score": f"{challenger_score:.6f}",
        }
        for key, value in decision.items():
            client.set_model_version_tag(name, version.version, key, value)
        mlflow.set_tags(decision | {"model_name": name, "model_version": str(version.version)})
        mlflow.log_metric("challenger_score", challenger_score)
        if champion_score is not None:
            mlflow.log_metric("champion_score", champion_score)
        log.info("%s v%s: %s (%s)", name, version.version, decision["promotion.decision"], reason)
        return RegisterResult(
            run_id=run.info.run_id,
            name=name,
            version=str(version.version),
            promoted=promoted,
            reason=reason,
            challenger_score=challenger_score,
            champion_score=champion_score,
        )


@hydra_main("register")
def main(cfg: DictConfig) -> None:
    register(cfg, run_id=cfg.run_id, force=cfg.force)


if __name__ == "__main__":
    main()
