"""`evaluate`: score a logged or registered model (or the fresh program) on a split.

    python -m pipelines.evaluate                                        # champion on test
    python -m pipelines.evaluate model_uri=models:/travel_intents@challenger
    python -m pipelines.evaluate model_uri=runs:/<run_id>/model eval.split=dev
    python -m pipelines.evaluate fresh=true                             # the unoptimised program

A model brings its own LM and adapter (rebuilt from its logged config), so a champion is scored
with exactly what it would serve with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dspy
import mlflow
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from .cli import hydra_main
from .evaluation import EvalOutcome, evaluate_split
from .plots import classification_figures, figures_html
from .programs import build_program
from .registry import load_program
from .session import resolve_metric, start_session
from .stats import bootstrap_ci
from .tracking import tracked_run

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


def score_extra_metrics(cfg: DictConfig, outcome: EvalOutcome, splits, split: str, judge) -> None:
    """Score each configured extra metric (e.g. deepeval judges) on every evaluated example.

    Each becomes a column of the per-example table and a `<split>_<name>` metric with a 95% bootstrap
    interval. A metric config with `judge: null` is judged by the evaluated model's own LM.
    """
    examples = splits.examples(split)
    for name, metric_cfg in cfg.extra_metrics.items():
        metric = instantiate(metric_cfg, **({} if metric_cfg.get("judge") else {"judge": judge}))
        scores = []
        for example, predicted in zip(examples, outcome.table["predicted"], strict=True):
            prediction = dspy.Prediction(**{splits.target: predicted})
            scores.append(metric(example, prediction))
        outcome.table[name] = scores
        mean, low, high = bootstrap_ci(scores)
        mlflow.log_metrics(
            {f"{split}_{name}": mean, f"{split}_{name}_ci95_low": low, f"{split}_{name}_ci95_high": high}
        )
        log.info("%s %s: %.3f [%.3f, %.3f]", split, name, mean, low, high)


def default_model_uri(cfg: DictConfig) -> str:
    return f"models:/{cfg.registry.name}@{cfg.registry.champion_alias}"


def evaluate(cfg: DictConfig, model_uri: str | None = None, split: str | None = None, fresh: bool = False):
    session = start_session(cfg)
    split = split or cfg.eval.split
    model_uri = None if fresh else (model_uri or default_model_uri(cfg))
    with tracked_run(cfg, "evaluate", run_name=cfg.run_name or f"evaluate-{split}") as run:
        splits = instantiate(cfg.task.data)
        splits.log_to_mlflow()
        metric = resolve_metric(cfg.task.metric)
        if model_uri is None:
            program = build_program(cfg.program, splits.labels)
            lm, adapter = session.lm, session.adapter
            mlflow.set_tag("evaluated_model", "fresh program (not compiled)")
        else:
            loaded = load_program(model_uri)
            program, lm, adapter = loaded.program, loaded.lm, loaded.adapter
            mlflow.set_tags({"evaluated_model": model_uri} | loaded.version_tags())
        outcome = evaluate_split(cfg, program, splits, split, metric, lm=lm, adapter=adapter)
        if cfg.get("extra_metrics"):
            score_extra_metrics(cfg, outcome, splits, split, judge=lm)
        outcome.log(split)
        if splits.labels:
            low, high = outcome.ci()
            summary = pd.DataFrame(
                [
                    {
                        "model": model_uri or "fresh program",
                        "split": split,
                        "examples": len(outcome.table),
                        "score": round(outcome.score, 4),
                        "ci95": f"[{low:.3f}, {high:.3f}]",
                    }
                ]
            )
            html = figures_html(classification_figures(outcome.table, splits.labels), f"Evaluation on {split}", summary)
            mlflow.log_text(html, f"eval/{split}_report.html")
        log.info(
            "%s on %s: %.3f (%d examples)",
            model_uri or "fresh program",
            split,
            outcome.score,
            len(outcome.table),
        )
        return EvaluateResult(run_id=run.info.run_id, model_uri=model_uri, split=split, outcome=outcome)


@hydra_main("evaluate")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg, model_uri=cfg.model_uri, fresh=cfg.fresh).score


if __name__ == "__main__":
    main()
