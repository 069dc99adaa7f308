"""One MLflow run per entry point, with its config, lineage and failure reason recorded.

Every run logs the resolved Hydra config (secrets redacted) as `config.yaml`, its flattened values
as params, and tags for the entry point, task, optimiser, LM and git commit. An exception inside the
run marks it FAILED (MLflow's own context manager does that) after tagging it with the reason (API keys
scrubbed), and SIGTERM is turned into such an exception.

A process killed hard (`kill -9`, the OOM killer, a lost machine) cannot end its run, so each run also
records the process that owns it (`process.pid`, `process.host`, `process.start`), and every entry point,
as it starts, marks the RUNNING runs of its experiment whose process on this host is gone as KILLED, with
the reason in `killed_reason` (`mark_stale_runs`). A sqlite store is created once under a file lock
(`ensure_store`): two runs starting together on a new store would otherwise both create its schema.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from pipelines.config import PROJECT_ROOT, flatten, redact, to_container
from pipelines.lm.secrets import scrub

log = logging.getLogger(__name__)
MAX_PARAM_CHARS = 6000  # MLflow's limit for one param value
SWEEP_PARENT_ENV = "PIPELINES_SWEEP_PARENT_RUN_ID"  # set by pipelines.tracking.sweep.MLflowSweep
PID_TAG, HOST_TAG, START_TAG = "process.pid", "process.host", "process.start"
KILLED_REASON_TAG = "killed_reason"
ASYNC_TRACES_ENV = "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"  # MLflow's switch for its background trace export
_READY_STORES: set[str] = set()  # sqlite files this process has seen created (or found complete)
_SIGNALS_RECEIVED: list[int] = []  # signals that ended a run in this process (read by exit_if_signalled)


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


def _proc_stat(pid: int) -> list[str] | None:
    """Fields after the command name in /proc/<pid>/stat (Linux): [0] state, [19] start time in ticks."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tags() -> dict[str, str]:
    """Who owns the run: pid and host, and the process's start time so a reused pid is told apart."""
    stat = _proc_stat(os.getpid())
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    return tags | ({START_TAG: stat[19]} if stat else {})


def process_alive(pid: int, start: str | None = None) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (macOS): the pid exists, so assume it is the run's
    if stat[0] in ("Z", "X"):  # a zombie has finished: its parent just has not collected it
        return False
    return start is None or stat[19] == start  # another start time: the pid now belongs to another process


def mark_stale_runs(experiment_id: str, reason_by: str = "a later run") -> list[str]:
    """Mark KILLED the RUNNING runs of `experiment_id` whose recorded process on THIS host is gone.

    Runs of other hosts are left alone (their processes cannot be checked from here), as are runs with no
    recorded process (a sweep's parent, a run started by other tools). Returns the ids marked."""
    client, host, marked = MlflowClient(), socket.gethostname(), []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        tags = run.data.tags
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) != host or not pid.isdigit() or process_alive(int(pid), tags.get(START_TAG)):
            continue
        reason = f"its process {pid} on {host} ended without closing the run (killed hard?); found by {reason_by}"
        client.set_tag(run.info.run_id, KILLED_REASON_TAG, reason)
        client.set_terminated(run.info.run_id, "KILLED")
        log.warning("run %s marked KILLED: %s", run.info.run_id, reason)
        marked.append(run.info.run_id)
    return marked


def set_trace_export(background: bool | None) -> None:
    """Traces written by MLflow's background export (True) or as each one ends (False); None leaves
    `MLFLOW_ENABLE_ASYNC_TRACE_LOGGING` as the environment has it (the package's default: as each ends).

    On a tracking server a trace costs several HTTP round trips, which the background export takes off the
    run's thread; on sqlite its writer threads only contend for the database lock."""
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


# The knobs a reader compares runs by; everything else stays in the `config.yaml` artifact.
HEADLINE_PARAMS = (
    "seed",
    "task.name",
    "task.data.labels",
    "task.data.train_size",
    "task.data.val_size",
    "task.data.dev_size",
    "task.data.test_size",
    "program._target_",
    "lm.model",
    "lm.temperature",
    "lm.max_tokens",
    "prompt_lm.model",
    "eval.split",
    "guard.name",
)
OPTIMIZING_ENTRIES = ("train", "optimize")


def headline_params(config: dict[str, Any], entry: str | None = None) -> dict[str, str]:
    """The few params worth a column: task and split sizes, program, LM, seed, and, for a run that optimises,
    the optimiser with its own settings (its `compiler` and `compile_args`, metric and targets left out)."""
    flat = flatten(config)
    keys = list(HEADLINE_PARAMS)
    if entry in OPTIMIZING_ENTRIES or entry is None:
        keys.append("optimizer.name")
        keys += [
            k
            for k in flat
            if k.startswith(("optimizer.compiler.", "optimizer.compile_args."))
            and not k.endswith(("_target_", ".metric", "_partial_"))
            and ".metric." not in k
        ]
        keys += [k for k in flat if k.startswith("budget.") and flat[k] is not None]
    return {k: str(flat[k])[:MAX_PARAM_CHARS] for k in keys if k in flat and flat[k] is not None}


def log_config(config: dict[str, Any], entry: str | None = None) -> None:
    """The resolved config (secrets redacted) as `config.yaml`, and its headline knobs as params."""
    resolved = redact(config)
    mlflow.log_text(OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
    mlflow.log_params(headline_params(resolved, entry))


def run_tags(entry: str, task: str | None = None, optimizer: str | None = None, lm: str | None = None) -> dict:
    tags = {"entry_point": entry, "git_commit": git_commit()}
    tags |= {k: str(v) for k, v in {"task": task, "optimizer": optimizer, "lm": lm}.items() if v is not None}
    return tags


def check_split_names(cfg: DictConfig) -> None:
    """`eval.split` and `report_splits` name split roles; refuse any other name, listing the roles."""
    from pipelines.data.splits import SPLITS, DataError

    named = {"eval.split": [cfg.eval.split]} if "eval" in cfg and cfg.eval.get("split") else {}
    if cfg.get("report_splits") is not None:
        named["report_splits"] = list(cfg.report_splits)
    for key, splits in named.items():
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise DataError(f"{key}: unknown split(s) {unknown}; choose from {list(SPLITS)}")


@contextmanager
def tracked_run(cfg: DictConfig, entry: str, run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start (or, under `mlflow run`, resume) the run for one entry point and record its config.

    Called by entry functions only: it reads the tracking settings and the few names it tags from `cfg`."""
    check_split_names(cfg)  # a typo in a split name fails here, before the run spends anything
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
    with mlflow.start_run(**kwargs) as run, _sigterm_as_exit() as signals:
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


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (a scheduler, `kill`, a CI timeout) into SystemExit and SIGINT into KeyboardInterrupt, so
    the run ends FAILED with a reason instead of staying RUNNING forever; yields the signals received. Only
    the main thread can install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return

    received: list[int] = []

    def terminate(signum, frame):
        received.append(signum)
        _SIGNALS_RECEIVED.append(signum)
        raise SystemExit(f"terminated by signal {signal.Signals(signum).name}")

    def interrupt(signum, frame):
        received.append(signum)
        _SIGNALS_RECEIVED.append(signum)
        raise KeyboardInterrupt

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, terminate)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_if_signalled(exc: BaseException) -> None:
    """After a signal ended the run (already marked FAILED, its traces flushed), exit now if worker threads are
    still busy, e.g. inside LM calls of a parallel evaluation that the signal abandoned.

    Python joins such threads before it exits (concurrent.futures' exit hook), so one hung call would hold a
    terminated process until the LM's timeout; a scheduler would then escalate to SIGKILL. Exit status 128 + the
    signal's number, as the shell reports a process killed by it."""
    if not _SIGNALS_RECEIVED:
        return
    busy = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    if not busy:
        return  # nothing to wait for: Python's own exit prints the reason and runs its exit hooks
    print(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, file=sys.stderr)
    print(f"exiting without waiting for {len(busy)} busy thread(s): {', '.join(t.name for t in busy)}", file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + _SIGNALS_RECEIVED[0])
