"""Run the rows of one request: concurrently where the LM can answer several at once, serially where not.

A provider LM (an HTTP server: OpenAI, vLLM, a fake) answers requests in parallel, so the rows go through
a bounded thread pool, `concurrency` rows in flight. The embedded model cannot: one llama.cpp context
decodes one sequence, and its engine holds a lock around every call, so threads would only queue on that
lock (and hold a worker each); it runs the rows one after another. Answers come back in row order.

    >>> predictions = run_rows(program, rows, lm=lm, adapter=adapter, concurrency=16)   # doctest: +SKIP

`concurrency` comes from `serve concurrency=N` (the `PIPELINES_SERVE_CONCURRENCY` variable it sets for
the server process), else the model's own `num_threads`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import dspy

from pipelines.lm.llama_engine import LlamaCppEngine

CONCURRENCY_ENV = "PIPELINES_SERVE_CONCURRENCY"


def row_concurrency(lm: dspy.LM, default: int = 1) -> int:
    """Rows of one request in flight at once: 1 for the embedded model, else the configured bound."""
    if isinstance(lm.engine, LlamaCppEngine):
        return 1
    return max(1, int(os.environ.get(CONCURRENCY_ENV) or default))


def run_rows(program: dspy.Module, rows: list[dict], *, lm: dspy.LM, adapter, concurrency: int) -> list:
    """One `dspy.Prediction` per row, in row order; the first failing row fails the request."""

    def one(row: dict):
        with dspy.context(lm=lm, adapter=adapter):  # DSPy settings are per thread: set them in each worker
            return program(**row)

    if concurrency <= 1 or len(rows) <= 1:
        return [one(row) for row in rows]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(rows)), thread_name_prefix="row") as pool:
        return list(pool.map(one, rows))
