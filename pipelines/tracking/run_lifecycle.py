"""One MLflow run per entry point, with its config, lineage and failure reason recorded.

Every run logs the resolved Hydra config (secrets redacted) as `config.yaml`, its headline values as params
(`run_params`), and tags for the entry point, task, optimiser, LM, git commit and owning process (`liveness`). An
exception inside the run marks it FAILED (MLflow's own context manager does that) after tagging it with the reason
(API keys scrubbed), and SIGTERM is turned into such an exception (`signals`).
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

from pipelines.lm.secrets import scrub
from pipelines.tracking.git import git_commit
from pipelines.tracking.liveness import mark_stale_runs, process_tags
from pipelines.tracking.run_params import log_config
from pipelines.tracking.signals import sigterm_as_exit
from pipelines.tracking.store import configure_tracking

log = logging.getLogger(__name__)
SWEEP_PARENT_ENV = "PIPELINES_SWEEP_PARENT_RUN_ID"  # set by pipelines.tracking.sweep.MLflowSweep


def run_tags(entry: str, task: str | None = None, optimizer: str | None = None, lm: str | None = None) -> dict:
    tags = {"entry_point": entry, "git_commit": git_commit()}
    tags |= {k: str(v) for k, v in {"task": task, "optimizer": optimizer, "lm": lm}.items() if v is not None}
    return tags


@contextmanager
def started_run(tracking, run_name: str | None, tags: dict, config: dict) -> Iterator[mlflow.ActiveRun]:
    """The run itself: under a sweep a child of its parent, under `mlflow run` the launcher's run."""
    experiment_id = configure_tracking(tracking)
    try:
        mark_stale_runs(experiment_id, reason_by=f"the {tags.get('entry_point')} run of pid {os.getpid()}")
    except Exception as exc:  # noqa: BLE001 (housekeeping must never stop the run itself)
        log.warning("could not check for stale runs: %s", exc)
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
    with mlflow.start_run(**kwargs) as run, sigterm_as_exit() as signals:
        named = {"mlflow.runName": run_name} if launcher_run and run_name else {}  # `mlflow run` picked a random one
        mlflow.set_tags(tags | process_tags() | named)
        log_config(config, tags.get("entry_point"))
        try:
            yield run
            # Library code that catches BaseException may have swallowed the signal's exception: the run
            # still ends FAILED with the reason, never FINISHED as if nothing had happened.
            if signal.SIGINT in signals:
                raise KeyboardInterrupt
            if signals:
                raise SystemExit(f"terminated by signal {signal.Signals(signals[0]).name}")
        except BaseException as exc:
            record_failure(run.info.run_id, scrub(failure_reason(exc))[:5000])  # a provider may echo the key
            raise
        finally:
            # With MLflow's background trace export on, the run ends with all its traces stored (else a no-op).
            mlflow.flush_trace_async_logging()


def failure_reason(exc: BaseException) -> str:
    """One line for the `error` tag. Python's own text is empty for Ctrl-C and for a bare exception: say what
    happened, and for a bare exception where it was raised."""
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt: interrupted by SIGINT (Ctrl-C)"
    if str(exc):
        return f"{type(exc).__name__}: {exc}"
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (raised at {Path(frame.filename).name}:{frame.lineno} in {frame.name})" if frame else ""
    return f"{type(exc).__name__} with no message{where}"


def record_failure(run_id: str, reason: str, attempts: int = 5) -> None:
    """Tag the reason and mark the run FAILED, retrying: a signal can land mid-write, and a busy sqlite store
    answers "database is locked" for a moment. MLflow's own end_run follows; this makes sure it is not the
    only chance to leave RUNNING behind."""
    client = mlflow.MlflowClient()
    for attempt in range(attempts):
        try:
            client.set_tag(run_id, "error", reason)
            client.set_terminated(run_id, "FAILED")
            return
        except Exception as exc:  # noqa: BLE001 (the original failure is what propagates)
            log.warning("recording the failure of run %s (attempt %d): %s", run_id, attempt + 1, exc)
            time.sleep(0.5 * (attempt + 1))
