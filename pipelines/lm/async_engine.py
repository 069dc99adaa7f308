"""`ThreadedAsyncEngine`: a custom sync engine's async counterpart, so programs written with DSPy's async API
(`aforward`, `acall`) run on the embedded LM too.

DSPy calls an LM from async code (`await lm.acall(...)`, which a predictor's `acall` does) through the LM's
`async_engine`; a custom engine without one is refused ("This custom engine has no async counterpart").
Provider LMs have theirs (DSPy's HTTP client, LiteLLM). llama.cpp decodes in this process, on the CPU: the
awaitable form of a call is the same call on a worker thread, so the event loop stays free for other
requests while it runs, and the engine's own bound on calls at once (`n_contexts`) still holds.

    >>> lm = dspy.LM("local/qwen", engine=engine, async_engine=ThreadedAsyncEngine(engine))   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

_DONE = object()


class ThreadedAsyncEngine:
    """`await complete(request)` / `async for event in stream(request)` on a sync engine, each call on a thread.
    Capabilities (`supports_response_schema`, `supported_params`, ...) are the wrapped engine's."""

    def __init__(self, engine: Any):
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        if name == "engine":  # not set yet (unpickling): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.engine, name)

    async def complete(self, request):
        return await asyncio.to_thread(self.engine.complete, request)

    async def stream(self, request) -> AsyncIterator[Any]:
        events = await asyncio.to_thread(lambda: iter(self.engine.stream(request)))
        while (event := await asyncio.to_thread(next, events, _DONE)) is not _DONE:
            yield event

    async def aclose(self) -> None:  # the wrapped engine is closed by its owner
        return None
