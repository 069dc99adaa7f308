"""Hydra sweeps as one MLflow parent run with a nested child run per job.

Registered as a Hydra callback (`hydra.callbacks.mlflow_sweep` in `conf/_base.yaml`); it acts only
in multirun mode. Under `mlflow run`, the run MLflow created (MLFLOW_RUN_ID) becomes the parent;
the variable is popped so jobs do not all resume that run (every `start_run` would, nested or not).
Jobs find the parent through PIPELINES_SWEEP_PARENT_RUN_ID (see `pipelines.tracking.run_lifecycle.started_run`).

A failed job ends the parent FAILED at once, naming the job: Hydra raises the job's exception after its
batch and never calls `on_multirun_end`, which would otherwise leave the parent RUNNING forever.
"""

from __future__ import annotations

import logging
import os

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from mlflow import MlflowClient
from omegaconf import DictConfig

from pipelines.lm.secrets import scrub
from pipelines.tracking.run_lifecycle import SWEEP_PARENT_ENV as PARENT_ENV
from pipelines.tracking.store import configure_tracking

log = logging.getLogger(__name__)


class MLflowSweep(Callback):
    def __init__(self) -> None:
        self.owned = False
        self.failed_jobs: list[str] = []

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

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        parent = os.environ.get(PARENT_ENV)
        if parent is None or job_return.status != JobStatus.FAILED:
            return
        try:
            _ = job_return.return_value  # a failed job's value is its exception, raised on reading
        except BaseException as exc:  # noqa: BLE001 (recorded here; Hydra raises it again after the batch)
            error = f"{type(exc).__name__}: {exc}"
        overrides = " ".join(job_return.overrides or [])
        self.failed_jobs.append(f"job ({overrides}): {error}")
        self._log_comparison(parent, config)
        if self.owned:
            client = MlflowClient()
            client.set_tag(parent, "error", scrub("; ".join(self.failed_jobs))[:5000])
            client.set_terminated(parent, "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        parent = os.environ.pop(PARENT_ENV, None)
        if parent is None:
            return
        table = self._log_comparison(parent, config)
        if self.owned:
            failed = bool(self.failed_jobs) or (len(table) and (table["status"] != "FINISHED").any())
            MlflowClient().set_terminated(parent, "FAILED" if failed else "FINISHED")

    @staticmethod
    def _log_comparison(parent: str, config: DictConfig):
        from pipelines.tracking.comparison import log_comparison

        split = config.eval.split  # a validation split: what picks a sweep's best job is never test
        table = log_comparison(parent, split)
        if len(table):
            log.info("sweep comparison (%s):\n%s", split, table[["optimizer", "baseline", "score", "lm_calls"]])
        return table
