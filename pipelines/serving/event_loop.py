"""The serving processes' event loop: as many request threads as `serve request_threads=` says, and no
Nagle delay on any worker's connections.

Request threads. MLflow's scoring server answers each request with `await asyncio.to_thread(predict, ...)`,
on the event loop's default executor: min(32, cores + 4) threads, 6 on a 2-core machine. A request to a
provider LM spends its time waiting on the network, so 6 threads capped a server at 6 requests in flight
(`python -m benchmarks.speed only=[serving]` reports throughput against the ideal), and six hung LM calls stalled
every other request until the LM's own timeout. The embedded model answers `lm.n_contexts` calls at a time (one per
llama.cpp context); the extra threads just wait.

TCP_NODELAY. With `workers` > 1, uvicorn binds the listening socket itself and hands it to each worker; it
creates it without a protocol number (uvicorn issue #3149), and asyncio turns TCP_NODELAY on for an accepted
connection only when the socket says IPPROTO_TCP. Nagle's algorithm then holds a response's body (uvicorn
writes the headers first) until the client acknowledges the headers, which a client does up to 40 ms
late (delayed ACK), so two workers answered one client slower than one worker did
(`python -m benchmarks.speed only=[serving] serving.clients=[1] serving.workers=2`).
Set on the listening socket, TCP_NODELAY is inherited by every connection it accepts (Linux).

`serve` names this factory in `UVICORN_LOOP`, which uvicorn's command line reads (`mlflow models serve`
runs that command), so each server stays MLflow's own.
"""

from __future__ import annotations

import asyncio
import os
import socket
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


class NoDelayEventLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, with TCP_NODELAY on a listening TCP socket it is handed (see the module docstring)."""

    async def create_server(self, protocol_factory, host=None, port=None, *, sock=None, **kwargs):
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await super().create_server(protocol_factory, host, port, sock=sock, **kwargs)


def loop_factory() -> asyncio.AbstractEventLoop:
    """The loop uvicorn would make (uvloop, a pinned dependency, which sets TCP_NODELAY itself; asyncio's, as
    `NoDelayEventLoop`, where uvloop is not installed), with a default executor of `request_threads()` threads."""
    make = auto_loop_factory(use_subprocess=False)
    loop = NoDelayEventLoop() if make is asyncio.SelectorEventLoop else make()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=request_threads(), thread_name_prefix="request"))
    return loop
