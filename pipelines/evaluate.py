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

import mlflow
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from .cli import hydra_main
from .evaluation import EvalOutcome, evaluate_program
from .plots import classification_figures, figures_html
from .programs import build_program
from .registry import load_program
from .session import resolve_metric, start_session
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
        outcome = evaluate_program(
            program,
            splits.examples(split),
            metric,
            lm=lm,
            adapter=adapter,
            num_threads=cfg.eval.num_threads,
            target=splits.target,
            labels=splits.labels,
            display_progress=cfg.eval.display_progress,
        )
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
