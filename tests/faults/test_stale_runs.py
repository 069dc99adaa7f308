"""Runs are never left RUNNING: a run whose process died hard is marked KILLED by the next entry point, and
processes starting together on a new sqlite store all get their runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from mlflow import MlflowClient

from pipelines.config import PROJECT_ROOT
from pipelines.tracking.liveness import HOST_TAG, KILLED_REASON_TAG, PID_TAG, START_TAG, mark_stale_runs, process_tags
from pipelines.tracking.store import configure_tracking
from pipelines.train import train

# A process that starts an entry point's run on the store in argv[1], once the file argv[2] exists, then
# hangs (bounded) until it is killed with SIGKILL, which no handler can catch: its run stays RUNNING.
CHILD = """
import sys, time
from pathlib import Path
from omegaconf import OmegaConf
from pipelines.tracking.run_lifecycle import started_run
uri, go, artifacts = sys.argv[1:4]
Path(go + ".ready." + sys.argv[4]).touch()
deadline = time.monotonic() + 120
while not Path(go).exists() and time.monotonic() < deadline:
    time.sleep(0.005)
tracking = OmegaConf.create({"uri": uri, "experiment": "test", "artifact_location": artifacts})
with started_run(tracking, "doomed", {"entry_point": "train"}, {}) as run:
    print(run.info.run_id, flush=True)
    time.sleep(120)
"""
CHILDREN = 3


def test_runs_of_processes_killed_hard_are_marked_killed_by_the_next_entry_point(make_cfg, tmp_path):
    cfg = make_cfg("train", ["optimizer=none", "task.data.dev_size=4"])
    db = tmp_path / "store" / "mlflow.db"
    assert not db.exists()  # a new store: the children race to create it
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, cfg.tracking.uri, str(go), cfg.tracking.artifact_location, str(i)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(CHILDREN)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("go.ready.*"))) < CHILDREN and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()  # all imported: now they touch the new store at the same moment
        run_ids = []
        for proc in procs:
            line = proc.stdout.readline().strip()
            assert line, proc.stderr.read() if proc.poll() is not None else "no run id"
            run_ids.append(line)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert [client.get_run(r).info.status for r in run_ids] == ["RUNNING"] * CHILDREN  # left behind
    assert {client.get_run(r).data.tags[PID_TAG] for r in run_ids} == {str(p.pid) for p in procs}

    result = train(cfg)  # any entry point, as it starts
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and run.info.end_time
        assert "ended without closing the run" in run.data.tags[KILLED_REASON_TAG]
        assert f"the train run of pid {os.getpid()}" in run.data.tags[KILLED_REASON_TAG]
    mine = client.get_run(result.run_id)
    assert mine.info.status == "FINISHED"
    assert mine.data.tags[PID_TAG] == str(os.getpid()) and mine.data.tags[HOST_TAG] == socket.gethostname()


def test_only_this_hosts_runs_whose_process_is_gone_are_marked(make_cfg):
    cfg = make_cfg("train")
    experiment_id = configure_tracking(cfg.tracking)
    client = MlflowClient()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here, me = socket.gethostname(), process_tags()

    def run_with(**tags):
        return client.create_run(experiment_id, tags=tags).info.run_id

    dead = run_with(**{PID_TAG: str(gone.pid), HOST_TAG: here})
    alive = run_with(**me)
    reused = run_with(**(me | {START_TAG: "1"}))  # our pid, but another process's start time: the pid was reused
    elsewhere = run_with(**{PID_TAG: str(gone.pid), HOST_TAG: "another-host"})
    untagged = run_with()  # e.g. a sweep's parent run: nothing to check it by
    assert sorted(mark_stale_runs(experiment_id)) == sorted([dead, reused])
    status = {r: client.get_run(r).info.status for r in (dead, alive, reused, elsewhere, untagged)}
    assert status == {dead: "KILLED", alive: "RUNNING", reused: "KILLED", elsewhere: "RUNNING", untagged: "RUNNING"}


def test_clean_runs_marks_stale_runs_of_every_experiment_on_demand(make_cfg):
    cfg = make_cfg("train")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_tags = {PID_TAG: str(gone.pid), HOST_TAG: socket.gethostname()}
    runs = [client.create_run(client.create_experiment(name), tags=dead_tags).info.run_id for name in ("a", "b")]
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.clean_runs", f"tracking.uri={cfg.tracking.uri}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 stale run(s) marked KILLED" in proc.stdout
    for run_id in runs:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and "found by clean_runs" in run.data.tags[KILLED_REASON_TAG]
