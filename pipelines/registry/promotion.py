"""The promotion transaction: register a run's model as challenger, compare it with the champion, promote on evidence.

Challenger and champion are compared on the same examples (`eval.split`: dev, never the optimiser's valset), paired
by row id. Per-example results already on record for that data digest are reused; missing ones are measured now. A
first registration (no champion) is held only to `registry.gate.max_error_rate` (errored or unparsed answers), on
the results the source run recorded. Registering a run twice reuses its version. Everything is decided
before the registry is touched, so an interrupted promotion leaves no half-made version.

    >>> with started_run(...) as run:                                                  # doctest: +SKIP
    ...     result = promote(source, uri, task, settings, cfg.registry, split="dev", register_run_id=run.info.run_id)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import DictConfig

from pipelines.data.task import Task
from pipelines.evaluation.runner import EvalSettings, evaluate_split
from pipelines.registry.gate import Decision, decide
from pipelines.registry.promotion_report import comparison_report
from pipelines.registry.prompts import move_prompt_aliases
from pipelines.registry.version_card import CardModel, model_id_of, version_card
from pipelines.registry.versions import (
    existing_version,
    get_alias,
    load_program,
    record_predictions,
    recorded_predictions,
)
from pipelines.tracking import metric_names as names
from pipelines.tracking.git import git_commit

log = logging.getLogger(__name__)


@dataclass
class RegisterResult:
    run_id: str
    name: str
    version: str
    promoted: bool
    reason: str
    challenger_score: float | None
    champion_score: float | None
    p_value: float | None = None


@dataclass
class Comparison:
    """What the gate compared and decided (tables are None when nothing was scored)."""

    decision: Decision
    champion: object | None
    challenger_table: pd.DataFrame | None
    champion_table: pd.DataFrame | None


@dataclass
class Evidence:
    """Which data the decision rests on: the gate split and its digest, and the held-out split's digest."""

    split: str
    digest: str
    test_digest: str | None = None


def scored_table(uri: str, task: Task, split: str, settings: EvalSettings) -> tuple[pd.DataFrame, float]:
    loaded = load_program(uri)
    outcome = evaluate_split(loaded.program, task, split, settings, lm=loaded.lm, adapter=loaded.adapter)
    return outcome.table, outcome.score


def promote(
    source: Run,
    model_uri: str,
    task: Task,
    settings: EvalSettings,
    registry: DictConfig,
    *,
    split: str,
    register_run_id: str,
    force: bool = False,
    report_path: str | None = None,
    surfaces: bool = True,
) -> RegisterResult:
    """Register `source`'s model as challenger and promote it to champion only on evidence, inside the active
    (register) run `register_run_id`. `registry` is the `registry` config group: `name`, `gate`, the aliases.

    Challenger and champion are compared on the same examples (`split`), paired by row id. Per-example
    results already on record for that data digest are reused; missing ones are measured now. Everything is decided
    before the registry is touched; if recording fails, what this call did is undone."""
    gate = registry.gate
    name = str(registry.name)
    client = MlflowClient()
    task.splits.require(split)
    digests = task.splits.log_to_mlflow()
    digest = digests[split]
    reused = existing_version(name, source.info.run_id, model_uri)
    champion = get_alias(name, registry.champion_alias)
    if champion is not None and reused is not None and champion.version == reused.version:
        # Already champion: its promotion record stands; comparing a version with itself proves nothing.
        reason = f"already the champion (v{champion.version}); nothing changed"
        log.info("%s v%s: %s", name, champion.version, reason)
        mlflow.set_tags(
            {"promotion.decision": "already_champion", "model_name": name, "model_version": str(champion.version)}
        )
        return RegisterResult(register_run_id, name, str(champion.version), False, reason, None, None)
    previous_challenger = get_alias(name, registry.challenger_alias)
    fresh: dict[str, tuple[str, pd.DataFrame, float]] = {}  # role -> (artifact path, table, score)

    def results(role: str, uri: str, version=None) -> pd.DataFrame:
        """Per-example results on the gate split: on record for this data digest, or measured now."""
        table = recorded_predictions(version, source.info.run_id if role == "challenger" else None, split, digest)
        if table is None:
            log.info("scoring %s (%s) on %s: no results on record for this data", role, uri, split)
            table, score = scored_table(uri, task, split, settings)
            path = f"eval/{role}_{split}_predictions.json"
            mlflow.log_table(table, artifact_file=path)
            fresh[role] = (path, table, score)
        return table

    if champion is None:
        # Nothing to compare with; the results still must hold no failed rows and few unparsed answers
        # (measured now where none are on record for this data).
        recorded = recorded_predictions(reused, source.info.run_id, split, digest)
        if recorded is None:
            recorded = results("challenger", model_uri, reused)
        decision = decide(recorded, None, max_error_rate=gate.max_error_rate)
        challenger_table, champion_table = None, None
    else:
        challenger_table = results("challenger", model_uri, reused)
        champion_table = results("champion", f"models:/{name}/{champion.version}", champion)
        decision = decide(
            challenger_table,
            champion_table,
            alpha=gate.alpha,
            min_gain=gate.min_gain,
            force=force,
            required=list(gate.required),
            tolerance=gate.tolerance,
            max_error_rate=gate.max_error_rate,
        )

    # Everything is known: now touch the registry, aliases last; if anything fails, undo what this run did.
    version = reused or mlflow.register_model(model_uri, name)
    try:
        for role, (path, _table, score) in fresh.items():
            target = version if role == "challenger" else champion
            record_predictions(target, split, digest, register_run_id, path, score)
        record_decision(
            client,
            registry,
            version,
            source,
            Comparison(decision, champion, challenger_table, champion_table),
            Evidence(split, digest, digests.get("test")),
            force=force,
            model_uri=model_uri,
            register_run_id=register_run_id,
        )
        if surfaces:  # the prompts follow the model's aliases, so prompts:/NAME@champion is the champion's
            move_prompt_aliases(f"models:/{name}/{version.version}", registry.challenger_alias)
            if decision.promote:
                move_prompt_aliases(f"models:/{name}/{version.version}", registry.champion_alias)
    except BaseException:
        if reused is None:
            client.delete_model_version(name, version.version)
        for alias, previous in (
            (registry.champion_alias, champion),
            (registry.challenger_alias, previous_challenger),
        ):
            if previous is not None:
                client.set_registered_model_alias(name, alias, previous.version)
                if surfaces:
                    move_prompt_aliases(f"models:/{name}/{previous.version}", alias)
        raise

    challenger_score = float(challenger_table["score"].mean()) if challenger_table is not None else None
    champion_score = float(champion_table["score"].mean()) if champion_table is not None else None
    champion_name = f"champion v{champion.version}" if champion else "no champion"
    report = comparison_report(
        f"challenger v{version.version}", challenger_table, champion_name, champion_table, decision
    )
    mlflow.log_text(report, "promotion_report.html")
    if report_path:
        Path(report_path).write_text(report)
    mlflow.set_tags(decision.tags() | {"model_name": name, "model_version": str(version.version)})
    # Explicit model ids: loading the champion made it MLflow's active model, which would otherwise
    # claim every metric logged here (the challenger's score included).
    challenger_id = model_id_of(version.source)
    if challenger_score is not None:
        mlflow.log_metric(names.GATE_CHALLENGER, challenger_score, model_id=challenger_id)
    if champion_score is not None:
        mlflow.log_metric(names.GATE_CHAMPION, champion_score, model_id=model_id_of(champion.source))
        if decision.test is not None:  # a refused comparison (failed rows) has no test
            mlflow.log_metric(names.GATE_P_VALUE, decision.test.p_value, model_id=challenger_id)
    log.info("%s v%s: %s (%s)", name, version.version, decision.tags()["promotion.decision"], decision.reason)
    return RegisterResult(
        run_id=register_run_id,
        name=name,
        version=str(version.version),
        promoted=decision.promote,
        reason=decision.reason,
        challenger_score=challenger_score,
        champion_score=champion_score,
        p_value=decision.test.p_value if decision.test else None,
    )


def record_decision(
    client, registry, version, source, comparison: Comparison, evidence: Evidence, *, force, model_uri, register_run_id
) -> None:
    decision, champion = comparison.decision, comparison.champion
    challenger_table, champion_table = comparison.challenger_table, comparison.champion_table
    split, digest, test_digest = evidence.split, evidence.digest, evidence.test_digest
    name = version.name
    src_tags = source.data.tags
    tags = {
        "task": src_tags.get("task", ""),
        "optimizer": src_tags.get("optimizer", "unknown"),
        "lm": src_tags.get("lm", "unknown"),
        "source_run_id": source.info.run_id,
        "source_model_uri": model_uri,
        "data_digest": digest,
        "data_split": split,
        "git_commit": src_tags.get("git_commit") or git_commit(),
        "promotion.forced": str(bool(force)).lower(),
        "promotion.champion_version": str(champion.version) if champion else "none",
    } | decision.tags()
    if challenger_table is not None:
        tags["promotion.challenger_score"] = f"{challenger_table['score'].mean():.6f}"
    if champion_table is not None:
        tags["promotion.champion_score"] = f"{champion_table['score'].mean():.6f}"
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, str(value))
    # The description is what the registry UI shows in full, as Markdown (tags are truncated there).
    models = [CardModel(f"challenger v{version.version}", challenger_table, model_id_of(version.source))]
    if champion is not None:
        models.append(CardModel(f"champion v{champion.version}", champion_table, model_id_of(champion.source)))
    description = version_card(
        version=str(version.version),
        decision=tags["promotion.decision"],
        promoted=decision.promote,
        reason=decision.reason,
        champion_version=str(champion.version) if champion else None,
        split=split,
        models=models,
        register_run_id=register_run_id,
        source_run_id=source.info.run_id,
        gate_digest=digest,
        held_out_digest=test_digest,
    )
    client.update_model_version(name, version.version, description=description)
    client.set_registered_model_alias(name, registry.challenger_alias, version.version)
    if decision.promote:
        client.set_registered_model_alias(name, registry.champion_alias, version.version)
