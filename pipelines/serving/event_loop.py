"""The scoring server's event loop, with as many request threads as `serve request_threads=` says.

MLflow's scoring server answers each request with `await asyncio.to_thread(predict, ...)`, on the event
loop's default executor: min(32, cores + 4) threads, 6 on a 2-core machine. A request to a provider LM
spends its time waiting on the network, so 6 threads capped a server at 6 requests in flight (measured: 16
clients at 0.28 of the ideal throughput), and six hung LM calls stalled every other request until the
LM's own timeout. `serve` names this factory in `UVICORN_LOOP`, which uvicorn's command line reads (it is
the command `mlflow models serve` runs), so the server stays MLflow's own with a larger pool. The embedded
model still answers one request at a time (one llama.cpp context); the extra threads just wait.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from uvicorn.loops.auto import auto_loop_factory

THREADS_ENV = "PIPELINES_SERVE_REQUEST_THREADS"
LOOP_ENV = "UVICORN_LOOP"
DEFAULT_THREADS = 64


def checked_threads(value) -> int:
    """`serve request_threads=` as a thread count; refused, naming the setting, unless a positive integer."""
    threads = int(value)
    if threads < 1:
        raise ValueError(f"serve request_threads must be a positive number of threads, got {value!r}")
    return threads


def request_threads(env=os.environ) -> int:
    value = env.get(THREADS_ENV, "")
    return checked_threads(value) if value else DEFAULT_THREADS


def loop_factory() -> asyncio.AbstractEventLoop:
    """The loop uvicorn would make (uvloop when installed, else asyncio's), with a default executor of
    `request_threads()` threads."""
    loop = auto_loop_factory(use_subprocess=False)()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=request_threads(), thread_name_prefix="request"))
    return loop
