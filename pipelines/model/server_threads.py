"""The scoring server's request threads: as many as the model's `request_threads`, not MLflow's 6.

MLflow's scoring server (3.17) answers every request with `await asyncio.to_thread(predict, ...)`: on its event
loop's default executor, min(32, cores + 4) threads, 6 on a 2-core machine. A request to a provider LM spends its
time waiting on the network, so 6 threads capped a server at 6 requests in flight (16 clients at 0.30 of the ideal
throughput), and 6 hung LM calls held every thread until their deadline. The model gives that loop a default
executor of `request_threads` threads (asyncio's `loop.set_default_executor`: the loop is asyncio's or uvloop's,
nothing of MLflow changes):
- at load, when uvicorn loads the app inside its running loop (`--workers` 2 or more, or `python -m
  pipelines.serve`, whose app factory runs there);
- otherwise at the first request, from that request's thread: with one worker uvicorn imports MLflow's app before
  its loop exists, so the loop is found then, the one running loop in the process besides the one async programs
  run on (a single heap scan, once).
Requests already queued finish on the old executor; every later one runs on the new one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from pipelines.programs.asynchronous import is_background_loop

log = logging.getLogger(__name__)


class ServerThreads:
    def __init__(self, threads: int):
        self.threads = threads
        self.settled = False  # widened, or found impossible: nothing more to try
        self._lock = threading.Lock()

    def at_load(self) -> None:
        """As the model loads: widen the running loop's executor, if the model loads inside one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not yet running: `at_request` finds it
        self._widen(loop)

    def at_request(self) -> None:
        """From a request's thread (cheap once settled): widen the server's loop if `at_load` could not."""
        if self.settled:
            return
        with self._lock:
            if self.settled:
                return
            loops = [
                o
                for o in gc.get_objects()
                if isinstance(o, asyncio.AbstractEventLoop) and o.is_running() and not is_background_loop(o)
            ]
            if len(loops) == 1:
                loops[0].call_soon_threadsafe(self._widen, loops[0])
            else:
                log.warning("%d running event loops: request threads left as the server made them", len(loops))
            self.settled = True

    def _widen(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="request"))
        self.settled = True
        log.info("scoring server: %d request threads", self.threads)
