"""One MLflow run per entry point, with its config, lineage and failure reason recorded.

Every run logs the resolved Hydra config (secrets redacted) as `config.yaml`, its flattened values
as params, and tags for the entry point, task, optimiser, LM and git commit. An exception inside the
run marks it FAILED (MLflow's own context manager does that) after tagging it with the reason, so a
run is never left RUNNING.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from omegaconf import DictConfig, OmegaConf

from pipelines.config import PROJECT_ROOT, flatten, redact, to_container

MAX_PARAM_CHARS = 6000  # MLflow's limit for one param value
SWEEP_PARENT_ENV = "PIPELINES_SWEEP_PARENT_RUN_ID"  # set by pipelines.tracking.sweep.MLflowSweep


def configure_tracking(tracking: DictConfig) -> str:
    """Point MLflow at the configured store and experiment; returns the experiment id.

    A new experiment on a local store keeps its artifacts beside the database (`mlartifacts/` at the
    project root), not in whatever directory the command ran from.
    """
    mlflow.set_tracking_uri(tracking.uri)
    mlflow.set_registry_uri(tracking.get("registry_uri") or tracking.uri)
    # MLFLOW_EXPERIMENT_ID wins, as everywhere in MLflow; `mlflow run --experiment-name X` sets it, so
    # train, evaluate and register launched that way all find each other in X.
    if experiment_id := os.environ.get("MLFLOW_EXPERIMENT_ID"):
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id
    experiment = mlflow.get_experiment_by_name(tracking.experiment)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return experiment.experiment_id
    artifact_location = tracking.get("artifact_location")
    if artifact_location:
        Path(artifact_location).mkdir(parents=True, exist_ok=True)
        artifact_location = Path(artifact_location).resolve().as_uri()
    try:
        experiment_id = mlflow.create_experiment(tracking.experiment, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:  # created concurrently by another job
        experiment_id = mlflow.get_experiment_by_name(tracking.experiment).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_config(config: dict[str, Any]) -> None:
    """The resolved config (secrets redacted) as `config.yaml` and as flattened params."""
    resolved = redact(config)
    mlflow.log_text(OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
    params = {k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten(resolved).items()}
    mlflow.log_params(params)


def run_tags(entry: str, task: str | None = None, optimizer: str | None = None, lm: str | None = None) -> dict:
    tags = {"entry_point": entry, "git_commit": git_commit()}
    tags |= {k: str(v) for k, v in {"task": task, "optimizer": optimizer, "lm": lm}.items() if v is not None}
    return tags


@contextmanager
def tracked_run(cfg: DictConfig, entry: str, run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start (or, under `mlflow run`, resume) the run for one entry point and record its config.

    Called by entry functions only: it reads the tracking settings and the few names it tags from `cfg`."""
    tags = run_tags(
        entry,
        task=cfg.task.name if "task" in cfg else None,
        optimizer=cfg.optimizer.name if "optimizer" in cfg and entry in ("train", "optimize") else None,
        lm=cfg.lm.get("model") if "lm" in cfg else None,
    )
    with started_run(cfg.tracking, run_name, tags, to_container(cfg)) as run:
        yield run


@contextmanager
def started_run(tracking, run_name: str | None, tags: dict, config: dict) -> Iterator[mlflow.ActiveRun]:
    """The run itself: under a sweep a child of its parent, under `mlflow run` the launcher's run."""
    experiment_id = configure_tracking(tracking)
    # `mlflow run` creates a run and passes its id in MLFLOW_RUN_ID: log into that run, so the run it
    # prints is the one holding the results. Popped so later start_run calls are not hijacked by it.
    launcher_run = os.environ.pop("MLFLOW_RUN_ID", None)
    sweep_parent = os.environ.get(SWEEP_PARENT_ENV)
    if sweep_parent:  # a job of a Hydra sweep: a child of the sweep's parent run (pipelines.tracking.sweep)
        kwargs = {"experiment_id": experiment_id, "parent_run_id": sweep_parent, "run_name": run_name}
    elif launcher_run:
        kwargs = {"run_id": launcher_run}
    else:
        kwargs = {"experiment_id": experiment_id, "run_name": run_name}
    with mlflow.start_run(**kwargs) as run, _sigterm_as_exit():
        mlflow.set_tags(tags)
        log_config(config)
        try:
            yield run
        except BaseException as exc:
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
            raise


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (a scheduler, `kill`, a CI timeout) into SystemExit, so the run ends FAILED with a
    reason instead of staying RUNNING forever. Only the main thread can install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(f"terminated by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
