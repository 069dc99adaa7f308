"""Run the rows of one request: concurrently where the LM can answer several at once, serially where not.

A provider LM (an HTTP server: OpenAI, vLLM, a fake) answers requests in parallel, so the rows go through
a bounded thread pool, `concurrency` rows in flight. The embedded model answers as many at once as it has
llama.cpp contexts (`lm.n_contexts`), each decoding one sequence; more threads would only queue for a context
(and hold a worker each). Answers come back in row order.

    >>> predictions = run_rows(program, rows, lm=lm, adapter=adapter, concurrency=16)   # doctest: +SKIP

`concurrency` comes from `serve concurrency=N` (the `PIPELINES_SERVE_CONCURRENCY` variable it sets for
the server process), else the model's own `num_threads`.

A served request has a deadline: the scoring server's timeout (`serve timeout=`), after which its client
has had a 504 and is gone. A row not started by then is never started (`DeadlinePassed`), so an abandoned
request stops sending work to the LM; a row already at the LM runs on until the LM's own timeout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import dspy

from pipelines.lm.llama_engine import LlamaCppEngine

CONCURRENCY_ENV = "PIPELINES_SERVE_CONCURRENCY"
# Set by `mlflow models serve` for the scoring server it starts (MLflow's `MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT`):
# read only when set, so batch scoring and notebooks get no deadline.
SERVER_TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"


class DeadlinePassed(TimeoutError):
    """The request's deadline passed before this row started: its client has already been answered 504."""


def request_deadline(env=os.environ, clock: Callable[[], float] = time.monotonic) -> float | None:
    """When the request now starting stops being worth answering, on `clock`; None outside the scoring server."""
    value = env.get(SERVER_TIMEOUT_ENV)
    return clock() + float(value) if value else None


def row_concurrency(lm: dspy.LM, default: int = 1) -> int:
    """Rows of one request in flight at once: the embedded model's contexts, else the configured bound."""
    if isinstance(lm.engine, LlamaCppEngine):
        return lm.engine.n_contexts
    return max(1, int(os.environ.get(CONCURRENCY_ENV) or default))


def run_rows(
    program: dspy.Module,
    rows: list[dict],
    *,
    lm: dspy.LM,
    adapter,
    concurrency: int,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list:
    """One `dspy.Prediction` per row, in row order; the first failing row fails the request. A row that has
    not started by `deadline` (on `clock`) raises `DeadlinePassed` instead of calling the program."""

    def one(row: dict):
        if deadline is not None and clock() > deadline:
            raise DeadlinePassed("the request's deadline passed before this row started; the row was not run")
        with dspy.context(lm=lm, adapter=adapter):  # DSPy settings are per thread: set them in each worker
            return program(**row)

    if concurrency <= 1 or len(rows) <= 1:
        return [one(row) for row in rows]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(rows)), thread_name_prefix="row") as pool:
        return list(pool.map(one, rows))
