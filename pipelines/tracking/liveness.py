"""Runs whose process is gone: each run records the process that owns it; RUNNING runs whose process is dead are KILLED.

A process killed hard (`kill -9`, the OOM killer, a lost machine) cannot end its run, so each run records
`process.pid`, `process.host` and `process.start`, and every entry point, as it starts, marks the RUNNING runs of its
experiment whose process on this host is gone as KILLED, with the reason in `killed_reason` (`mark_stale_runs`).
Liveness is read from `/proc` (Linux).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from mlflow import MlflowClient

log = logging.getLogger(__name__)
PID_TAG, HOST_TAG, START_TAG = "process.pid", "process.host", "process.start"
KILLED_REASON_TAG = "killed_reason"


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
