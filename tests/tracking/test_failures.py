"""An LM that keeps failing is retried, then fails the run visibly: FAILED, with the reason."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from pipelines.config import PROJECT_ROOT
from pipelines.train import train
from tests.helpers import free_port
from tests.tracking.lm_probe import calls_reported


def test_unreachable_lm_fails_the_run_with_its_reason(make_cfg):
    port = free_port()  # nothing listens here
    cfg = make_cfg(
        "train",
        [
            "lm=openai_compatible",
            f"lm.api_base=http://127.0.0.1:{port}/v1",
            "lm.model=self-hosted/nothing-here",
            "lm.num_retries=1",
            "lm.cache=false",
            "optimizer=none",
            "task.data.dev_size=12",
        ],
        fake=False,
    )
    with pytest.raises(Exception):  # noqa: B017 (whatever litellm raises; the run's record is what matters)
        train(cfg)
    client = MlflowClient()
    exp = client.get_experiment_by_name("test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED", run.info.status
    assert run.data.tags["error"]  # the reason, e.g. a connection error
    assert "connect" in run.data.tags["error"].lower(), run.data.tags["error"]


DEV_ROWS = 200  # every row but train (40), val (40) and test (40)
ANSWERED = 5  # the LM answers this many calls, then hangs


@pytest.mark.parametrize(
    ("signum", "reason", "threads"),
    [(signal.SIGTERM, "SIGTERM", 1), (signal.SIGINT, "interrupted by SIGINT", 1), (signal.SIGTERM, "SIGTERM", 2)],
)
def test_a_signal_ends_the_run_failed_not_running(tmp_path, signum, reason, threads):
    """A run killed by SIGTERM (a scheduler, a timeout) or Ctrl-C is marked FAILED with the reason.

    The signal is sent once the run exists and its LM, having answered a few dev rows, hangs on the next:
    the run cannot have finished scoring, however fast or slow the machine is, and the signal must stop a
    call that would otherwise never return. Scoring in worker threads, the hung calls are in those threads
    (the fake hangs for 600 s): the process must still exit, not wait for them."""
    store = tmp_path / "store"
    store.mkdir()
    calls_file = tmp_path / "lm_calls.txt"
    uri = f"sqlite:///{store}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments()  # create the store's tables now, not concurrently with the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.train",
            "lm._target_=tests.tracking.lm_probe.reporting_fake_lm",
            f"+lm.calls_file={calls_file}",
            f"+lm.hang_after={ANSWERED}",
            "lm.cache=false",
            f"tracking.uri={uri}",
            f"tracking.artifact_location={store}/artifacts",
            "tracking.experiment=term",
            "optimizer=none",
            f"paths.dspy_cache_dir={tmp_path}/cache",
            "task.data.train_size=40",
            "task.data.val_size=40",
            f"task.data.dev_size={DEV_ROWS}",
            "task.data.test_size=40",
            "eval.display_progress=false",
            f"eval.num_threads={threads}",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        run, calls = _wait_for_lm_calls(client, proc, calls_file, ANSWERED + 1)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    if threads > 1:  # exited at once, as the shell reports a process the signal killed
        assert proc.returncode == 128 + signum, (proc.returncode, stderr.decode()[-2000:])
    run = client.get_run(run.info.run_id)
    detail = (calls, run.info.status, proc.returncode, run.data.tags.get("error"), stderr.decode()[-2000:])
    assert run.info.status == "FAILED", detail
    assert reason in run.data.tags["error"], detail
    assert "score/dev" not in run.data.metrics  # stopped mid-way through scoring dev
    # Nothing sent after the hung calls: one per scoring thread at most.
    assert ANSWERED + 1 <= calls_reported(calls_file) <= ANSWERED + threads


def _wait_for_lm_calls(client: MlflowClient, proc: subprocess.Popen, calls_file, at_least: int, timeout: float = 300.0):
    """The child's run once it exists and its LM has been sent `at_least` calls; and the calls so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the child exited ({proc.returncode}) before it was signalled")
        calls = calls_reported(calls_file)
        if calls >= at_least:
            try:
                exp = client.get_experiment_by_name("term")
                runs = client.search_runs([exp.experiment_id]) if exp else []
            except Exception:  # noqa: BLE001 (the child may be mid-write)
                runs = []
            if runs:
                return runs[0], calls_reported(calls_file)
        time.sleep(0.1)
    raise AssertionError(f"no run calling its LM within {timeout}s")
