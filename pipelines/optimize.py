"""`optimize`: compile a program with a DSPy optimiser, measured against the program as written.

    python -m pipelines.optimize                                   # MIPROv2 (auto=light)
    python -m pipelines.optimize optimizer=gepa budget.max_lm_calls=500
    python -m pipelines.optimize -m optimizer=miprov2,simba,gepa   # a sweep, compared in the parent run

`train` is a preset of this pipeline (`conf/train.yaml`). Split roles: the optimiser trains on `train`
and selects on `val`; the result is scored on `report_splits` (dev, and the held-out test). What a
sweeper optimises is the dev score, never test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import mlflow
from omegaconf import DictConfig

from pipelines.cli import hydra_main, tracked_run
from pipelines.config import to_container
from pipelines.data.task import Task
from pipelines.evaluation.runner import EvalSettings
from pipelines.model.log import log_program_model
from pipelines.model.spec import build_spec
from pipelines.optimizers.budget import Budget
from pipelines.optimizers.compile import build_optimizer, check_finetuning, check_split_sizes
from pipelines.optimizers.pipeline import optimize_program
from pipelines.programs import build_program
from pipelines.registry.prompts import register_program_prompts
from pipelines.session import Session
from pipelines.tracking.logged_model_metrics import log_model_scores_from_run
from pipelines.tracking.program_card import log_program
from pipelines.tracking.summary import genai_surfaces, report

log = logging.getLogger(__name__)
SELECTION_SPLIT = "dev"  # what a sweeper compares: a validation score, never test


@dataclass
class OptimizeResult:
    run_id: str
    model_uri: str
    scores: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    stopped_by_budget: str | None = None

    @property
    def selection_score(self) -> float:
        # NaN, never another split, when dev was not scored: a sweeper must not select on test.
        return self.scores.get(SELECTION_SPLIT, float("nan"))


def optimize(cfg: DictConfig, session: Session | None = None, entry: str = "optimize") -> OptimizeResult:
    """The entry function: config in, objects built once, the pipeline run and its model logged."""
    session = session or Session.start(cfg)
    spec = build_optimizer(cfg.optimizer, session.lm, session.prompt_lm)
    budget = Budget(**to_container(cfg.budget))
    settings = EvalSettings.from_config(cfg.eval, cfg.get("guard"), cfg.get("tracking"))
    run_name = cfg.run_name or f"{entry}-{spec.name}-{cfg.task.name}"
    with tracked_run(cfg, entry, run_name=run_name) as run:
        check_finetuning(spec, session.lm)  # before any data or LM call: the run FAILS with the reason, nothing spent
        task = Task.from_config(cfg.task)
        task.splits.require(*cfg.report_splits)
        check_split_sizes(spec, len(task.examples("train")), len(task.examples("val")))
        task.splits.log_to_mlflow()
        program, program_config = build_program(cfg.program, task.contract)
        result = optimize_program(
            program,
            task,
            spec,
            lm=session.lm,
            report_splits=list(cfg.report_splits),
            settings=settings,
            budget=budget,
            baseline=bool(cfg.baseline),
            logging_scope=session.compile_logging(),
            log_evals=bool(session.autolog.get("log_evals")),
        )
        log_program(result.program)
        model_spec = build_spec(
            program_config=program_config,
            contract=task.contract,
            lm_config=to_container(cfg.lm),
            adapter_config=to_container(cfg.adapter) if cfg.get("adapter") else None,
            task_config=task.config,
            num_threads=settings.num_threads,
            guard_config=to_container(cfg.guard) if cfg.get("guard") else None,
        )
        example = task.splits.frame(cfg.report_splits[0])[task.contract.input_names].head(2)
        surfaces = genai_surfaces(cfg.tracking)
        prompts = (
            register_program_prompts(
                result.program, str(cfg.registry.name), lm_config=model_spec["lm"], message=f"{run_name} ({entry})"
            )
            if surfaces
            else []
        )
        info = log_program_model(result.program, model_spec, input_example=example, prompts=prompts)
        mlflow.set_tag("model_uri", info.model_uri)
        if surfaces:  # the scores were measured before the model existed: attach them to it now
            log_model_scores_from_run(info.model_id, task.splits, list(cfg.report_splits))
        return OptimizeResult(run.info.run_id, info.model_uri, result.scores, result.baseline, result.stopped_by_budget)


@hydra_main("optimize")
def main(cfg: DictConfig) -> float:
    result = optimize(cfg)
    report([result.run_id], note=genai_surfaces(cfg.tracking))
    return result.selection_score


if __name__ == "__main__":
    main()
