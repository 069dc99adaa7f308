"""Run the rows of one request: concurrently where the LM can answer several at once, serially where not.

A provider LM (an HTTP server: OpenAI, vLLM, a fake) answers requests in parallel, so `concurrency` rows of a
request are in flight at once. The embedded model answers as many at once as it has llama.cpp contexts
(`lm.n_contexts`), each decoding one sequence; more threads would only queue for a context. Answers come back
in row order.

    >>> runner = RowRunner(threads=64)                                                    # doctest: +SKIP
    >>> runner.run(program, rows, lm=lm, adapter=adapter, concurrency=16, deadline=t)    # doctest: +SKIP

In a scoring server every request has a deadline (`ServingLimits.request_seconds`). Its rows run on the
model's own threads (`row_threads`, shared by all requests), and the request's thread waits for them only
until the deadline: then the request is a 504 (`DeadlinePassed`) and its thread is free for the next
request, hung LM calls or not. Rows not started by the deadline never start, so an abandoned request stops
sending work to the LM, and each LM call is bounded by the deadline too (`within`): every attempt waits at
most the request's time, and a retry is made only while it can still finish in time, instead of the LM's
own `timeout` times `num_retries`. Without a deadline (batch scoring, a notebook) rows run as before: in
order on the calling thread, or `concurrency` at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import dspy

from pipelines.lm.llama_engine import LlamaCppEngine


class DeadlinePassed(TimeoutError):
    """The request's deadline passed before its rows were answered: its client is told 504."""


def row_concurrency(lm: dspy.LM, configured: int) -> int:
    """Rows of one request in flight at once: the embedded model's contexts, else the configured bound."""
    if isinstance(lm.engine, LlamaCppEngine):
        return lm.engine.n_contexts
    return max(1, int(configured))


def provider_lm(lm: dspy.LM) -> bool:
    """Whether `lm` reaches its model over the network through one of DSPy's engines (it has a `timeout`)."""
    return isinstance(getattr(lm, "engine", None), str)


def bound_attempts(lm: dspy.LM, seconds: float) -> None:
    """As a served model loads: each attempt of `lm`'s calls waits at most a request's `seconds`."""
    if provider_lm(lm):
        timeout = lm.kwargs.get("timeout")
        lm.kwargs["timeout"] = float(seconds) if timeout is None else min(float(timeout), float(seconds))


def within(lm: dspy.LM, remaining: float) -> dspy.LM:
    """`lm`, retrying only as often as full attempts still fit in `remaining` seconds (a copy when that is fewer
    retries than its own `num_retries`; copies share the engine and its connections)."""
    timeout = lm.kwargs.get("timeout") if provider_lm(lm) else None
    if not timeout or not lm.num_retries:
        return lm
    retries = min(lm.num_retries, max(0, int(remaining // float(timeout)) - 1))
    return lm if retries == lm.num_retries else lm.copy(num_retries=retries)


class RowRunner:
    """The model's own threads for rows (`row_threads`), shared by every request in the process."""

    def __init__(self, threads: int):
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:  # threads start on first use, not as the model loads
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="row")
        return self._pool

    def run(self, program, rows: list[dict], **kwargs) -> list:
        return run_rows(program, rows, pool=self.pool, **kwargs)


def run_rows(
    program: dspy.Module,
    rows: list[dict],
    *,
    lm: dspy.LM | None,
    adapter,
    concurrency: int,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    pool: ThreadPoolExecutor | None = None,
) -> list:
    """One `dspy.Prediction` per row, in row order; the first failing row fails the request.

    With a `deadline` (on `clock`), rows run on `pool` (a fresh one when none is given) and the caller waits
    for them until the deadline only: then `DeadlinePassed`, and the rows not yet started never start."""

    def one(row: dict):
        if deadline is not None:
            remaining = deadline - clock()
            if remaining <= 0:
                raise DeadlinePassed("the request's deadline passed before this row started; the row was not run")
            row_lm = within(lm, remaining) if lm is not None else lm
        else:
            row_lm = lm
        with dspy.context(lm=row_lm, adapter=adapter):  # DSPy settings are per thread: set them in each worker
            return program(**row)

    if deadline is None and (concurrency <= 1 or len(rows) <= 1):
        return [one(row) for row in rows]
    if pool is not None:
        return _windowed(one, rows, pool, concurrency, deadline, clock)
    own = ThreadPoolExecutor(max_workers=min(concurrency, len(rows)), thread_name_prefix="row")
    try:
        return _windowed(one, rows, own, concurrency, deadline, clock)
    finally:
        own.shutdown(wait=deadline is None, cancel_futures=True)  # past a deadline: hung rows are not waited for


def _windowed(one, rows, pool, concurrency, deadline, clock) -> list:
    """`one(row)` for every row on `pool`, at most `concurrency` at once, waiting no later than `deadline`."""
    results: list = [None] * len(rows)
    running: dict[Future, int] = {}
    following = iter(range(len(rows)))
    try:
        for i in following:
            running[pool.submit(one, rows[i])] = i
            if len(running) >= concurrency:
                break
        while running:
            timeout = None if deadline is None else max(0.0, deadline - clock())
            done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:
                raise DeadlinePassed("the request ran past its deadline with rows still at the LM")
            for future in done:
                results[running.pop(future)] = future.result()  # a failed row fails the request
                nxt = next(following, None)
                if nxt is not None:
                    running[pool.submit(one, rows[nxt])] = nxt
        return results
    finally:
        for future in running:
            future.cancel()  # not started: never starts; started: runs on, its answer unused
