"""LM calls, tokens and cost of a stage, from DSPy's own usage tracker.

    >>> with measure_usage() as usage:                       # doctest: +SKIP
    ...     program(text="hello")
    >>> usage.summary()                                      # doctest: +SKIP
    {'lm_calls': 1, 'input_tokens': 212, 'output_tokens': 9, 'cost_usd': 0.0}

DSPy records usage only for calls that reached a model (cache hits are free and not counted).
Cost uses LiteLLM's price table for provider models; the embedded model (`local/...`) costs 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dspy


def _tokens(entry: dict, *names: str) -> int:
    return int(next((entry[n] for n in names if entry.get(n) is not None), 0) or 0)


def price_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    if model.startswith("local/"):
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


@contextmanager
def measure_usage() -> Iterator[Usage]:
    with dspy.track_usage() as tracker:
        yield Usage(tracker)
