"""`python -m pipelines.serve` as a child process on a free port, stopped with everything it started.

    with serve_process(["model_uri=models:/bench@champion"], env) as (url, proc):
        ...                                   # poll url until it answers, then measure or test against it

The server runs in its own process group (`serve` execs uvicorn, which may fork workers), so stopping it
signals the whole group: SIGTERM, then SIGKILL after 30 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pipelines.config import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def process_group(
    command: list[str], *, cwd, env: Mapping[str, str], output=subprocess.DEVNULL
) -> Iterator[subprocess.Popen]:
    """`command` in a process group of its own, stopped as a whole on exit: SIGTERM, then SIGKILL after 30 s."""
    proc = subprocess.Popen(
        command, cwd=cwd, env=dict(env), start_new_session=True, stdout=output, stderr=subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def serve_process(overrides: list[str], env: Mapping[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    command = [sys.executable, "-m", "pipelines.serve", f"port={port}", *overrides]
    with process_group(command, cwd=PROJECT_ROOT, env=env) as proc:
        yield f"http://127.0.0.1:{port}", proc
