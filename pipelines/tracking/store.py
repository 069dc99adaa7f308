"""Where runs go: the configured store and experiment, a new sqlite store created once, how traces are written.

A sqlite store is created once under a file lock (`ensure_store`): two runs starting together on a new store would
otherwise both create its schema.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from omegaconf import DictConfig

ASYNC_TRACES_ENV = "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"  # MLflow's switch for its background trace export
_READY_STORES: set[str] = set()  # sqlite files this process has seen created (or found complete)


def ensure_store(uri: str) -> None:
    """Create a sqlite store's schema, once, while holding an exclusive `flock` on `<db>-lock`.

    MLflow creates the tables the first time a process touches a new file; two processes doing that at
    once fail (`table ... already exists`). Under the lock the first creates them and the others find them.
    The lock file's name follows SQLite's own `<db>-wal`/`-journal` (and the `mlflow.db-*` ignore rule)."""
    if not uri.startswith("sqlite:///"):
        return
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]  # sqlite:////abs/x.db -> /abs/x.db
    if path in _READY_STORES or path == ":memory:":
        return
    import fcntl  # POSIX only, like the rest of the tooling; imported here so the module loads anywhere

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # creates or checks the schema
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY_STORES.add(path)


class _WakingStop(threading.Event):
    """The stop signal of MLflow's background trace export, which also wakes its consumer.

    The consumer waits on its queue a second at a time (`get(timeout=1)`) and checks the stop signal between waits,
    so every flush of an idle queue (`mlflow.flush_trace_async_logging`: the GenAI evaluation's, the run's end, the
    one at exit) otherwise waits up to that second. A no-op task put as the signal is set ends the wait at once."""

    def __init__(self, queue):
        super().__init__()
        self._queue = queue

    def set(self) -> None:
        super().set()
        from mlflow.tracing.export.async_export_queue import Task

        with contextlib.suppress(Exception):  # a full queue: the consumer is not waiting anyway
            self._queue.put_nowait(Task(handler=lambda: None, args=()))


def _prompt_flushes() -> None:
    """Flushes of MLflow's background trace export that return as soon as the queue is drained (see `_WakingStop`).

    Reaches into `AsyncTraceExportQueue` (MLflow 3.x): where its internals differ, flushes keep MLflow's own pace."""
    try:
        from mlflow.tracing.export.async_export_queue import AsyncTraceExportQueue
    except ImportError:
        return
    flush = AsyncTraceExportQueue.flush
    if getattr(flush, "_wakes_consumer", False):
        return

    def prompt_flush(self, terminate=False):
        stop, queue = getattr(self, "_stop_event", None), getattr(self, "_queue", None)
        if type(stop) is threading.Event and not stop.is_set() and queue is not None:
            self._stop_event = _WakingStop(queue)  # the consumer reads the attribute on each turn of its loop
        return flush(self, terminate)

    prompt_flush._wakes_consumer = True
    AsyncTraceExportQueue.flush = prompt_flush


def set_trace_export(background: bool | None) -> None:
    """Traces written by MLflow's background export (True) or as each one ends (False); None leaves
    `MLFLOW_ENABLE_ASYNC_TRACE_LOGGING` as the environment has it (the package's default: as each ends).

    On a tracking server a trace costs several HTTP round trips, which the background export takes off the
    run's thread; on sqlite its writer threads only contend for the database lock."""
    _prompt_flushes()
    if background is None:
        return
    value = "true" if background else "false"
    if os.environ.get(ASYNC_TRACES_ENV) != value:
        os.environ[ASYNC_TRACES_ENV] = value
        mlflow.tracing.reset()  # MLflow reads the variable when it builds its exporter: rebuild it


def configure_tracking(tracking: DictConfig) -> str:
    """Point MLflow at the configured store and experiment; returns the experiment id.

    A new experiment on a local store keeps its artifacts beside the database (`mlartifacts/` at the
    project root), not in whatever directory the command ran from.
    """
    for uri in {tracking.uri, tracking.get("registry_uri") or tracking.uri}:
        ensure_store(uri)  # before MLflow touches a new store file
    set_trace_export(tracking.get("background_traces"))
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
