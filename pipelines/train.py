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
from pipelines.tracking.summary import genai_surfaces, report


def train(cfg: DictConfig, session: Session | None = None) -> OptimizeResult:
    return optimize(cfg, session, entry="train")


@hydra_main("train")
def main(cfg: DictConfig) -> float:
    result = train(cfg)
    report([result.run_id], note=genai_surfaces(cfg.tracking))
    return result.selection_score


if __name__ == "__main__":
    main()
