"""`train`: the optimisation pipeline with a quick optimiser, scored on dev, logged as a model.

    python -m pipelines.train                                   # BootstrapFewShot on the default task
    python -m pipelines.train optimizer=none                    # the zero-shot baseline
    python -m pipelines.train task=banking77 optimizer=labeled_fewshot

A preset of `optimize` (`conf/train.yaml`: no baseline stage, dev only), not a second copy of it.
"""

from __future__ import annotations

from omegaconf import DictConfig

from pipelines.cli import hydra_main
from pipelines.optimize import OptimizeResult, optimize
from pipelines.session import Session


def train(cfg: DictConfig, session: Session | None = None) -> OptimizeResult:
    return optimize(cfg, session, entry="train")


@hydra_main("train")
def main(cfg: DictConfig) -> float:
    return train(cfg).selection_score


if __name__ == "__main__":
    main()
