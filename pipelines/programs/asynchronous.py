"""Programs written with DSPy's async API: a class that implements `aforward` (and calls its predictors with
`await predictor.acall(...)`).

Async callers await it: the agent server streams it with `acall` (`dspy.streamify(..., is_async_program=True)`),
so many streams share one event loop instead of a thread each. Everything else in the pipeline calls programs
synchronously: optimisers (`program(**inputs)` on their own threads), evaluation, the scoring server's rows.
For a program with `aforward` and no `forward` of its own, `runnable_sync` gives its class a `forward` that
runs `aforward` to completion on one event loop per process (on a thread of its own), with the caller's DSPy
settings and trace context. One loop, not one per call: LM clients bound to a loop (HTTP pools) stay usable.

    >>> program = runnable_sync(MyAsyncProgram())                    # doctest: +SKIP
    >>> program(text="where is my bag")                              # sync: optimisers, evaluation  # doctest: +SKIP
    >>> await program.acall(text="where is my bag")                  # async: the agent server   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading

import dspy

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _defines(cls: type, name: str) -> bool:
    """Whether `cls` or a class between it and `dspy.Module` defines `name` (DSPy's own base does not count)."""
    return any(name in vars(k) for k in cls.__mro__ if not issubclass(dspy.Module, k))


def is_async(program: dspy.Module) -> bool:
    """The program's own class implements `aforward`: async callers should `acall` it."""
    return _defines(type(program), "aforward")


def runnable_sync(program: dspy.Module) -> dspy.Module:
    """`program`, callable synchronously as well: its class gets a `forward` running `aforward` if it has none."""
    cls = type(program)
    if is_async(program) and not _defines(cls, "forward"):
        cls.forward = _forward_via_aforward
    return program


def _forward_via_aforward(self, *args, **kwargs):
    return run_coroutine(self.aforward(*args, **kwargs))


def run_coroutine(coroutine):
    """Run `coroutine` on the process's background event loop and wait for its result, in the caller's context
    (DSPy's `dspy.context` settings and MLflow's active span are context variables)."""
    loop, context, done = _background_loop(), contextvars.copy_context(), concurrent.futures.Future()

    def start() -> None:
        task = loop.create_task(coroutine, context=context)
        task.add_done_callback(lambda t: _settle(t, done))

    loop.call_soon_threadsafe(start)
    return done.result()


def _settle(task: asyncio.Task, done: concurrent.futures.Future) -> None:
    if task.cancelled():
        done.cancel()
    elif task.exception() is not None:
        done.set_exception(task.exception())
    else:
        done.set_result(task.result())


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="async-programs", daemon=True).start()
        return _loop


def is_background_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether `loop` is the one `run_async` runs programs on (a server looking for its own loop skips it)."""
    return loop is _loop
