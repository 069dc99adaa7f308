"""Tokens on every LM call's trace span, so MLflow's own usage and cost views fill in.

MLflow's DSPy autolog records token usage only on module spans, and only for predictions that carry DSPy's
per-prediction usage, which DSPy leaves out whenever a usage tracker is already active (ours is: every
stage measures its calls and tokens). The traces then say "Token Usage 0". This callback gives each LM call
a usage tracker of its own, nested in the stage's (DSPy rolls it up on exit, so the stage's counts do not
change), and writes what the call used on the LM span, with the model name: MLflow's store prices the span
from those two (LiteLLM's price table; an embedded `local/` model has no price) and sums usage and cost into
the trace's totals. Only LM spans (leaves) carry usage, so nothing is counted twice.

It must run before MLflow's callback ends the span: `install` puts it first in DSPy's callback list.
"""

from __future__ import annotations

import threading
from typing import Any

import dspy
import mlflow
from dspy.utils.callback import BaseCallback
from mlflow.tracing.constant import SpanAttributeKey, TokenUsageKey


def _tokens(usage: dict, *names: str) -> int:
    return int(next((usage[n] for n in names if usage.get(n) is not None), 0) or 0)


class LMSpanUsage(BaseCallback):
    def __init__(self) -> None:
        self._open: dict[str, tuple[Any, Any, str]] = {}
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        scope = dspy.track_usage()  # entered here, left in on_lm_end: the same thread, strictly nested
        tracker = scope.__enter__()
        with self._lock:
            self._open[call_id] = (scope, tracker, instance.model)

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        with self._lock:
            opened = self._open.pop(call_id, None)
        if opened is None:
            return
        scope, tracker, model = opened
        usage = tracker.get_total_tokens().get(model) or {}
        scope.__exit__(None, None, None)  # the call's usage rolls up into the stage's tracker
        span = mlflow.get_current_active_span()  # the LM call's span, still open: MLflow's callback runs next
        if span is None or not usage:
            return
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


def install() -> None:
    """Put one LMSpanUsage first among DSPy's callbacks (after `mlflow.dspy.autolog` added MLflow's)."""
    others = [c for c in dspy.settings.callbacks if not isinstance(c, LMSpanUsage)]
    dspy.configure(callbacks=[LMSpanUsage(), *others])
