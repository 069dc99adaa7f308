"""The main job: train -> evaluate the new model on test -> register (champion only if it wins).

    python -m pipelines.main                               # the README's first command runs this
    python -m pipelines.main optimizer=labeled_fewshot task=banking77

Three MLflow runs, one per stage, so each shows up in the tracking UI as its own row.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from .cli import hydra_main
from .evaluate import evaluate
from .register import register
from .train import train

log = logging.getLogger(__name__)


def run_main(cfg: DictConfig):
    trained = train(cfg)
    tested = evaluate(cfg, model_uri=trained.model_uri, split=cfg.test_split)
    registered = register(cfg, run_id=trained.run_id, force=cfg.force)
    log.info(
        "done: %s score %.3f, %s score %.3f; registered %s v%s (%s)",
        trained.split,
        trained.score,
        tested.split,
        tested.score,
        registered.name,
        registered.version,
        registered.reason,
    )
    return trained, tested, registered


@hydra_main("main")
def main(cfg: DictConfig) -> float:
    return run_main(cfg)[1].score


if __name__ == "__main__":
    main()
