"""LM calls, tokens and cost of a stage, from DSPy's own usage tracker.

    >>> with measure_usage() as usage:                       # doctest: +SKIP
    ...     program(text="hello")
    >>> usage.summary()                                      # doctest: +SKIP
    {'lm_calls': 1, 'input_tokens': 212, 'output_tokens': 9, 'cost_usd': 0.0}

DSPy records usage only for calls that reached a model and answered (cache hits are free and not
counted). Cost uses LiteLLM's price table for provider models; a model with no per-token price costs 0: the
embedded one (`local/...`) and one on your own server (`lm.self_hosted`, whose prefix `unpriced_provider` adds).

Requests are counted separately, as each one is SENT (`count_requests`): DSPy retries a failed provider
call itself (`num_retries`), each attempt one request on whichever engine the LM uses (DSPy's own HTTP client
or LiteLLM), and a failed attempt records no usage. So
"calls answered" undercounts what a failing provider is sent; a budget must bound requests.

    >>> with count_requests() as sent:                       # doctest: +SKIP
    ...     program(text="hello")                            # one call, failed once, retried
    >>> sent.count                                           # doctest: +SKIP
    2
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dspy
from dspy.utils.usage_tracker import UsageTracker


def _tokens(entry: dict, *names: str) -> int:
    return int(next((entry[n] for n in names if entry.get(n) is not None), 0) or 0)


# Model prefixes with no per-token price: the embedded engine's, and each self-hosted server's as it is declared.
# By the prefix, because a server of your own may answer under a provider's model name (`self-hosted/gpt-4o-mini`),
# which LiteLLM's table would price at that provider's rates.
_UNPRICED_PROVIDERS = {"local"}


def unpriced_provider(provider: str) -> None:
    """Declare that `provider/...` models cost nothing per token (`pipelines.lm.self_hosted`)."""
    _UNPRICED_PROVIDERS.add(provider)


def is_unpriced(model: str) -> bool:
    return model.partition("/")[0] in _UNPRICED_PROVIDERS


def price_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    if is_unpriced(model):
        return 0.0
    import litellm

    litellm.suppress_debug_info = True  # else an unknown model prints litellm's provider list to stdout
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=input_tokens, completion_tokens=output_tokens
        )
    except Exception:  # a self-served model litellm has no price for
        return 0.0
    return float(prompt_cost + completion_cost)


@dataclass
class Usage:
    tracker: object

    def summary(self) -> dict[str, float]:
        calls = inp = out = 0
        cost = 0.0
        for model, entries in self.tracker.usage_data.items():
            m_in = sum(_tokens(e, "prompt_tokens", "input_tokens") for e in entries)
            m_out = sum(_tokens(e, "completion_tokens", "output_tokens") for e in entries)
            calls, inp, out = calls + len(entries), inp + m_in, out + m_out
            cost += price_usd(model, m_in, m_out)
        return {"lm_calls": calls, "input_tokens": inp, "output_tokens": out, "cost_usd": round(cost, 6)}


class SharedUsageTracker(UsageTracker):
    """One tracker for every thread of a stage. DSPy's `ParallelExecutor` (Evaluate, the optimisers) deep-copies the
    active tracker into each worker thread and never merges the copies back, so with `num_threads` > 1
    `dspy.track_usage()` would see none of the calls made in threads. Copies of this one are itself."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self

    def add_usage(self, lm: str, usage_entry: dict) -> None:
        with self._lock:
            super().add_usage(lm, usage_entry)


@contextmanager
def measure_usage() -> Iterator[Usage]:
    """`dspy.track_usage()`, with calls made in worker threads counted too; rolls up into an enclosing tracker."""
    tracker = SharedUsageTracker()
    parent = dspy.settings.usage_tracker
    with dspy.settings.context(usage_tracker=tracker):
        try:
            yield Usage(tracker)
        finally:
            if parent is not None:
                for lm, entries in tracker.usage_data.items():
                    parent.usage_data[lm].extend(entries)


class RequestCount:
    """Provider requests sent while active, retries included. `gate(sent_so_far)` runs before each one is
    sent and may raise a `BaseException` to stop it (LiteLLM swallows `Exception`s from its hooks)."""

    def __init__(self, gate: Callable[[int], None] | None = None):
        self.count = 0
        self.gate = gate
        self._lock = threading.Lock()

    def before_send(self) -> None:
        with self._lock:  # DSPy's evaluator and optimisers send from several threads
            if self.gate is not None:
                try:
                    self.gate(self.count)  # a BaseException stops the request: not sent, not counted
                except Exception:  # noqa: S110 (LiteLLM would ignore it and send anyway: so it is counted)
                    pass
            self.count += 1


_ACTIVE: list[RequestCount] = []
_ACTIVE_LOCK = threading.Lock()
_ATTEMPT_HOOKED = False
_LITELLM_HOOK = None
# Set while DSPy sends an attempt we counted: LiteLLM's hook then leaves that request alone.
_IN_DSPY_ATTEMPT: contextvars.ContextVar[bool] = contextvars.ContextVar("pipelines_in_dspy_attempt", default=False)


def _sent() -> None:
    with _ACTIVE_LOCK:
        active = list(_ACTIVE)
    for counter in active:
        counter.before_send()


def _counts(lm) -> bool:
    # DSPy's own engines ("auto", "lm15", "litellm") send provider requests; a custom engine object (the embedded
    # llama.cpp model) sends none: its calls are counted by `measure_usage`.
    return isinstance(getattr(lm, "_engine_spec", None), str)


def _hook_dspy_attempts() -> None:
    """Count each attempt DSPy sends, on whichever of its engines (its own HTTP client or LiteLLM): DSPy's retry
    loop (`dspy.clients.execution.execute`) runs one attempt per request, and passes `num_retries=0` to LiteLLM.
    The hook wraps that one function (sync and async); a `BaseException` from a budget's gate stops the attempt
    before anything is sent."""
    global _ATTEMPT_HOOKED
    if _ATTEMPT_HOOKED:
        return
    from dspy.clients import execution

    attempt, aattempt = execution._attempt, execution._aattempt

    @functools.wraps(attempt)
    def counted_attempt(lm, *args, **kwargs):
        if not _counts(lm):
            return attempt(lm, *args, **kwargs)
        _sent()
        token = _IN_DSPY_ATTEMPT.set(True)
        try:
            return attempt(lm, *args, **kwargs)
        finally:
            _IN_DSPY_ATTEMPT.reset(token)

    @functools.wraps(aattempt)
    async def counted_aattempt(lm, *args, **kwargs):
        if not _counts(lm):
            return await aattempt(lm, *args, **kwargs)
        _sent()
        token = _IN_DSPY_ATTEMPT.set(True)
        try:
            return await aattempt(lm, *args, **kwargs)
        finally:
            _IN_DSPY_ATTEMPT.reset(token)

    execution._attempt, execution._aattempt = counted_attempt, counted_aattempt
    _ATTEMPT_HOOKED = True


def _hook_litellm() -> None:
    """One LiteLLM input callback per process, for LiteLLM requests sent outside a DSPy LM (a judge calling LiteLLM
    itself); those from a DSPy LM are counted as DSPy sends them."""
    global _LITELLM_HOOK
    if _LITELLM_HOOK is not None:
        return
    import litellm
    from litellm.integrations.custom_logger import CustomLogger

    # LiteLLM logs each call at INFO ("completion() model=...", "Completed Call"): under Hydra's INFO root that
    # is four lines a row on the console and in the job's log file. Its warnings and errors still show.
    logging.getLogger("LiteLLM").setLevel(logging.WARNING)

    class _RequestHook(CustomLogger):
        def log_pre_api_call(self, model, messages, kwargs):
            if not _IN_DSPY_ATTEMPT.get():
                _sent()

    _LITELLM_HOOK = _RequestHook()
    litellm.input_callback.append(_LITELLM_HOOK)


def install_request_hook() -> None:
    """Count provider requests from here on: DSPy's attempts always, LiteLLM's own once LiteLLM is imported.

    Installed when a provider LM is built (`provider_lm`); LiteLLM is never imported for it, so a run on DSPy's own
    HTTP engine (`lm.engine: auto`) or on the embedded model never pays LiteLLM's import (seconds)."""
    _hook_dspy_attempts()
    if "litellm" in sys.modules:
        _hook_litellm()


@contextmanager
def count_requests(gate: Callable[[int], None] | None = None) -> Iterator[RequestCount]:
    """Count every provider request this process sends inside the block (all threads; the embedded
    model sends none: its calls are counted by `measure_usage`)."""
    install_request_hook()  # an LM built some other way than `provider_lm`; never imports LiteLLM
    counter = RequestCount(gate)
    with _ACTIVE_LOCK:
        _ACTIVE.append(counter)
    try:
        yield counter
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.remove(counter)
