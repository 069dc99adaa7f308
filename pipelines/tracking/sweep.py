"""Hydra sweeps as one MLflow parent run with a nested child run per job.

Registered as a Hydra callback (`hydra.callbacks.mlflow_sweep` in `conf/_base.yaml`); it acts only
in multirun mode. Under `mlflow run`, the run MLflow created (MLFLOW_RUN_ID) becomes the parent;
the variable is popped so jobs do not all resume that run (every `start_run` would, nested or not).
Jobs find the parent through PIPELINES_SWEEP_PARENT_RUN_ID (see `pipelines.tracking.runs.tracked_run`).
"""

from __future__ import annotations

import logging
import os

from hydra.experimental.callback import Callback
from mlflow import MlflowClient
from omegaconf import DictConfig

from pipelines.tracking.runs import SWEEP_PARENT_ENV as PARENT_ENV
from pipelines.tracking.runs import configure_tracking

log = logging.getLogger(__name__)


class MLflowSweep(Callback):
    def __init__(self) -> None:
        self.owned = False

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        experiment_id = configure_tracking(config.tracking)
        launcher_run = os.environ.pop("MLFLOW_RUN_ID", None)
        if launcher_run:
            parent = launcher_run
        else:
            overrides = " ".join(config.hydra.overrides.task) if "hydra" in config else ""
            parent = (
                MlflowClient()
                .create_run(experiment_id, run_name=f"sweep {overrides}".strip()[:250], tags={"entry_point": "sweep"})
                .info.run_id
            )
            self.owned = True
        os.environ[PARENT_ENV] = parent
        log.info("sweep parent run %s", parent)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from pipelines.tracking.comparison import log_comparison

        parent = os.environ.pop(PARENT_ENV, None)
        if parent is None:
            return
        split = config.eval.split  # a validation split: what picks a sweep's best job is never test
        table = log_comparison(parent, split)
        if len(table):
            log.info("sweep comparison (%s):\n%s", split, table[["optimizer", "baseline", "score", "lm_calls"]])
        if self.owned:
            failed = len(table) and (table["status"] != "FINISHED").any()
            MlflowClient().set_terminated(parent, "FAILED" if failed else "FINISHED")
