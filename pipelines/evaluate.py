"""`evaluate`: score a logged or registered model (or the fresh program) on a split.

    python -m pipelines.evaluate                                        # champion on test
    python -m pipelines.evaluate model_uri=models:/travel_intents@challenger
    python -m pipelines.evaluate model_uri=runs:/<run_id>/model eval.split=dev
    python -m pipelines.evaluate fresh=true                             # the unoptimised program

A model brings its own LM and adapter (rebuilt from its logged config), so a champion is scored with
exactly what it would serve with, on the task and data settings its training run recorded (unless the
command line changes the task). Its guards too, unless `guard=<name>` chooses others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import dspy
import mlflow
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from pipelines.cli import adopt_recorded_task, hydra_main, tracked_run
from pipelines.data.task import Task
from pipelines.evaluation.genai import GenAIRows, log_genai_evaluation, split_dataset
from pipelines.evaluation.plots import classification_figures, latency_figure
from pipelines.evaluation.runner import EvalOutcome, EvalSettings, evaluate_split, predicted_col
from pipelines.evaluation.stats import bootstrap_ci
from pipelines.guards import GuardSet
from pipelines.programs import build_program
from pipelines.registry.versions import load_program, source_run_id
from pipelines.session import Session
from pipelines.tracking.html_report import figures_html, plotly_js_source
from pipelines.tracking.logged_model_metrics import log_model_score
from pipelines.tracking.store import configure_tracking
from pipelines.tracking.summary import genai_surfaces, report

log = logging.getLogger(__name__)


@dataclass
class EvaluateResult:
    run_id: str
    model_uri: str | None
    split: str
    outcome: EvalOutcome

    @property
    def score(self) -> float:
        return self.outcome.score


def score_extra_metrics(metrics: dict, outcome: EvalOutcome, task: Task, split: str) -> None:
    """Score each extra metric (e.g. deepeval judges) on every evaluated example.

    Each becomes a column of the per-example table and a `<split>/<name>` metric with a 95% bootstrap
    interval. The prediction each metric sees is rebuilt from the table's `predicted.*` columns.
    """
    outputs = task.contract.output_names
    for name, metric in metrics.items():
        scores = []
        for example, (_, row) in zip(task.examples(split), outcome.table.iterrows(), strict=True):
            prediction = dspy.Prediction(**{f: row[predicted_col(f)] for f in outputs})
            scores.append(float(metric(example, prediction)))
        outcome.table[name] = scores
        mean, low, high = bootstrap_ci(scores)
        mlflow.log_metrics({f"{split}/{name}": mean, f"{split}/{name}/ci_low": low, f"{split}/{name}/ci_high": high})
        log.info("%s %s: %.3f [%.3f, %.3f]", split, name, mean, low, high)


def model_label(model_uri: str, version_tags: dict[str, str]) -> str:
    """A registered model by name and version (`travel_intents v3`), any other by its URI."""
    if version_tags:
        return f"{version_tags['model_name']} v{version_tags['model_version']}"
    return model_uri


def default_model_uri(cfg: DictConfig) -> str:
    return f"models:/{cfg.registry.name}@{cfg.registry.champion_alias}"


def evaluate(
    cfg: DictConfig,
    session: Session | None = None,
    model_uri: str | None = None,
    split: str | None = None,
    fresh: bool = False,
) -> EvaluateResult:
    session = session or Session.start(cfg)
    settings = EvalSettings.from_config(cfg.eval, cfg.get("guard"), cfg.get("tracking"))
    split = split or cfg.eval.split
    model_uri = None if fresh else (model_uri or default_model_uri(cfg))
    surfaces = genai_surfaces(cfg.tracking)
    with tracked_run(cfg, "evaluate", run_name=cfg.run_name or f"evaluate-{cfg.task.name}-{split}") as run:
        task = Task.from_config(cfg.task)
        task.splits.require(split)
        task.splits.log_to_mlflow()
        if model_uri is None:
            program, _ = build_program(cfg.program, task.contract)
            lm, adapter = session.lm, session.adapter
            mlflow.set_tag("evaluated_model", "fresh program (not compiled)")
            model, model_id = "fresh program", None
        else:
            loaded = load_program(model_uri)
            program, lm, adapter = loaded.program, loaded.lm, loaded.adapter
            mlflow.set_tags({"evaluated_model": model_uri} | loaded.version_tags())
            model, model_id = model_label(model_uri, loaded.version_tags()), loaded.model_id
            if not settings.guards:  # no `guard=` given: the guards the model serves with
                settings = replace(settings, guards=GuardSet.from_config(loaded.spec.get("guard")))
        if surfaces:  # the GenAI evaluation's tags, expectations and feedback, written with each trace
            rows = GenAIRows.for_task(task, split=split, model=model, run_id=run.info.run_id)
            settings = replace(settings, annotations=rows)
        outcome = evaluate_split(program, task, split, settings, lm=lm, adapter=adapter)
        if cfg.get("extra_metrics"):
            judged = {
                name: instantiate(metric_cfg, **({} if metric_cfg.get("judge") else {"judge": lm}))
                for name, metric_cfg in cfg.extra_metrics.items()
            }
            score_extra_metrics(judged, outcome, task, split)
        outcome.log(split)
        low, high = outcome.ci()
        if model_id and surfaces:
            log_model_score(model_id, task.splits, split, outcome.score, low, high)  # on the model's page
        if surfaces:  # the same traces, as an MLflow GenAI evaluation scored by the task metric
            dataset = split_dataset(task, split, run.info.experiment_id)
            log_genai_evaluation(outcome, task, split, model=model, dataset=dataset, model_id=model_id, lm=lm)
        summary = pd.DataFrame(
            [
                {
                    "model": model,
                    "split": split,
                    "examples": len(outcome.table),
                    "score": round(outcome.score, 4),
                    "ci95": f"[{low:.3f}, {high:.3f}]",
                }
            ]
        )
        figures = [
            f
            for name, labels in outcome.label_sets.items()
            for f in classification_figures(outcome.table, name, labels)
        ]
        figures.append(latency_figure(outcome.table))
        plotly = plotly_js_source(run.info.experiment_id, run.info.run_id)  # logged once per experiment
        report_html = figures_html(figures, f"Evaluation of {model} on {split}", summary, plotly)
        mlflow.log_text(report_html, f"eval/{split}_report.html")
        log.info(
            "%s on %s: %.3f [%.3f, %.3f] (%d examples)",
            model_uri or "fresh program",
            split,
            outcome.score,
            low,
            high,
            len(outcome.table),
        )
        return EvaluateResult(run_id=run.info.run_id, model_uri=model_uri, split=split, outcome=outcome)


@hydra_main("evaluate")
def main(cfg: DictConfig) -> float:
    if not cfg.fresh:
        configure_tracking(cfg.tracking)
        adopt_recorded_task(cfg, source_run_id(cfg.model_uri or default_model_uri(cfg)))
    result = evaluate(cfg, model_uri=cfg.model_uri, fresh=cfg.fresh)
    report([result.run_id], note=genai_surfaces(cfg.tracking))
    return result.score


if __name__ == "__main__":
    main()
