"""The main job: train -> evaluate the new model on test -> register (champion only if it wins).

    python -m pipelines.main                               # the README's first command runs this
    python -m pipelines.main optimizer=labeled_fewshot task=banking77

Three MLflow runs, one per stage, so each shows up in the tracking UI as its own row; one process,
one Session: the LM is built once and autolog configured once.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from pipelines.cli import hydra_main
from pipelines.evaluate import evaluate
from pipelines.register import register
from pipelines.session import Session
from pipelines.tracking.summary import genai_surfaces, report
from pipelines.train import train

log = logging.getLogger(__name__)


def run_main(cfg: DictConfig):
    session = Session.start(cfg)
    trained = train(cfg, session)
    tested = evaluate(cfg, session, model_uri=trained.model_uri, split=cfg.test_split)
    registered = register(cfg, session, run_id=trained.run_id, force=cfg.force)
    log.info(
        "done: dev score %.3f, %s score %.3f; registered %s v%s (%s)",
        trained.selection_score,
        tested.split,
        tested.score,
        registered.name,
        registered.version,
        registered.reason,
    )
    return trained, tested, registered


@hydra_main("main")
def main(cfg: DictConfig) -> float:
    trained, tested, registered = run_main(cfg)
    report([trained.run_id, tested.run_id, registered.run_id], note=genai_surfaces(cfg.tracking))
    return trained.selection_score  # a validation score: what a sweeper may optimise


if __name__ == "__main__":
    main()
