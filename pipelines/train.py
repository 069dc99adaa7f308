"""`train`: compile a program with a quick optimiser, score it on dev, log it as an MLflow model.

python -m pipelines.train                                   # BootstrapFewShot on the default task
python -m pipelines.train optimizer=none                    # the zero-shot baseline
python -m pipelines.train task=banking77 optimizer=labeled_fewshot
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import mlflow
from hydra.utils import instantiate
from omegaconf import DictConfig

from .cli import hydra_main
from .compile import compile_program
from .evaluation import evaluate_split
from .model import build_spec, log_program_model
from .programs import build_program
from .session import resolve_metric, start_session
from .tracking import tracked_run
from .usage import measure_usage

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    score: float
    split: str


def train(cfg: DictConfig) -> TrainResult:
    session = start_session(cfg)
    with tracked_run(cfg, "train", run_name=cfg.run_name or f"train-{cfg.optimizer.name}") as run:
        splits = instantiate(cfg.task.data)
        splits.log_to_mlflow()
        program = build_program(cfg.program, splits.labels)
        metric = resolve_metric(cfg.task.metric)

        log.info("compile: optimizer=%s on %d train examples", cfg.optimizer.name, len(splits.train))
        start = time.perf_counter()
        with measure_usage() as usage:
            compiled = compile_program(cfg, session, program, splits.train, splits.dev)
        compile_s = time.perf_counter() - start
        mlflow.log_metrics({"compile_wall_s": compile_s} | {f"compile_{k}": v for k, v in usage.summary().items()})
        log.info("compile: done in %.1fs", compile_s)

        split = cfg.eval.split
        outcome = evaluate_split(cfg, compiled, splits, split, metric)
        outcome.log(split)
        log.info("%s score: %.3f (%d examples, %.1fs)", split, outcome.score, len(outcome.table), outcome.wall_s)

        spec = build_spec(cfg, splits.labels, compiled, num_threads=cfg.eval.num_threads)
        example = splits.frames[split][spec["inputs"]].head(2)
        model_uri = log_program_model(compiled, spec, input_example=example)
        mlflow.set_tag("model_uri", model_uri)
        return TrainResult(run_id=run.info.run_id, model_uri=model_uri, score=outcome.score, split=split)


@hydra_main("train")
def main(cfg: DictConfig) -> float:
    return train(cfg).score


if __name__ == "__main__":
    main()
