"""Tokens on every LM call's trace span, so MLflow's own usage and cost views fill in.

MLflow's DSPy autolog records token usage only on module spans, and only for predictions that carry DSPy's
per-prediction usage, which DSPy leaves out whenever a usage tracker is already active (ours is: every
stage measures its calls and tokens). The traces then say "Token Usage 0". This callback reads what each LM
call used from the LM's own history entry (DSPy appends one per call, with its usage, before the callbacks
end) and writes it on the LM span, with the model name: MLflow's store prices the span from those two
(LiteLLM's price table) and sums usage and cost into the trace's totals. Only LM spans (leaves) carry usage, so
nothing is counted twice. It changes no DSPy setting.

A model with no per-token price (the embedded `local/` one, a self-hosted server's: `pipelines.lm.usage.is_unpriced`)
gets its cost, 0, set on the span, which MLflow then leaves as it is. Priced by name, your own server answering as
`gpt-4o-mini` would cost OpenAI's rates in the traces; and each lookup of a name LiteLLM does not know imports
LiteLLM (seconds at start-up), fails, and can print LiteLLM's red "Provider List" line (MLflow silences it around the
lookup by switching a global on and off again, which rows in threads race).

It must run before MLflow's callback ends the span: `install` puts it first in DSPy's callback list.
"""

from __future__ import annotations

import threading
from typing import Any

import dspy
import mlflow
from dspy.utils.callback import BaseCallback
from mlflow.tracing.constant import CostKey, SpanAttributeKey, TokenUsageKey

from pipelines.lm.usage import is_unpriced

ZERO_COST_KEYS = (CostKey.INPUT_COST, CostKey.OUTPUT_COST, CostKey.TOTAL_COST)


def _tokens(usage: dict, *names: str) -> int:
    return int(next((usage[n] for n in names if usage.get(n) is not None), 0) or 0)


class LMSpanUsage(BaseCallback):
    def __init__(self) -> None:
        self._open: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        history = getattr(instance, "history", None)
        if history is None:
            return
        with self._lock:  # the last entry before this call: the call's own entry comes after it
            self._open[call_id] = (instance, history[-1] if history else None)

    def _entry(self, instance, before, outputs) -> dict | None:
        """This call's history entry: the newest one after `before`, the one with these outputs if several
        calls ended meanwhile (rows run in threads)."""
        candidates = []
        for entry in reversed(instance.history):
            if entry is before:
                break
            candidates.append(entry)
        for entry in candidates:
            if entry.get("outputs") == outputs:
                return entry
        return candidates[0] if len(candidates) == 1 else None

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        with self._lock:
            opened = self._open.pop(call_id, None)
        if opened is None or exception is not None:
            return
        instance, before = opened
        entry = self._entry(instance, before, outputs)
        usage = (entry or {}).get("usage") or {}
        span = mlflow.get_current_active_span()  # the LM call's span, still open: MLflow's callback runs next
        if span is None or not usage:
            return
        model = instance.model
        inputs = _tokens(usage, "prompt_tokens", "input_tokens")
        outputs_ = _tokens(usage, "completion_tokens", "output_tokens")
        span.set_attribute(
            SpanAttributeKey.CHAT_USAGE,
            {
                TokenUsageKey.INPUT_TOKENS: inputs,
                TokenUsageKey.OUTPUT_TOKENS: outputs_,
                TokenUsageKey.TOTAL_TOKENS: _tokens(usage, "total_tokens") or inputs + outputs_,
            },
        )
        span.set_attribute(SpanAttributeKey.MODEL, model.split("/", 1)[-1])
        if "/" in model:
            span.set_attribute(SpanAttributeKey.MODEL_PROVIDER, model.split("/", 1)[0])
        if is_unpriced(model):
            span.set_attribute(SpanAttributeKey.LLM_COST, dict.fromkeys(ZERO_COST_KEYS, 0.0))


def install() -> None:
    """Put one LMSpanUsage first among DSPy's callbacks (after `mlflow.dspy.autolog` added MLflow's)."""
    others = [c for c in dspy.settings.callbacks if not isinstance(c, LMSpanUsage)]
    dspy.configure(callbacks=[LMSpanUsage(), *others])
