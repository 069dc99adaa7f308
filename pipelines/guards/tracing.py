"""Guards on the trace: a GUARDRAIL span per guard pass, trace tags per hit, and never the text before it.

A guard pass opens a span only inside a trace someone else started (the program's, under MLflow's DSPy
autolog): a guard pass alone is no trace worth storing, and a served model without tracing must not
write one per request. The span's input is the list of field names and its output the row as it goes on:
the text before redaction would put the e-mail address we just removed into the trace store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import dspy
import mlflow
from mlflow.entities import SpanType

from pipelines.guards.base import Hit


def program_traced() -> bool:
    """Whether DSPy calls are traced here: MLflow's DSPy autolog installs its callback in DSPy's settings."""
    from mlflow.dspy.callback import MlflowCallback

    return any(isinstance(c, MlflowCallback) for c in dspy.settings.callbacks)


@contextmanager
def guarded_span(name: str) -> Iterator[Any]:
    """The span a guarded call opens when the program would be traced (else None): the guard passes, the
    program and its LM calls become its children, in the caller's trace (an evaluation's example, a served
    request) or, with none open, in a trace of its own."""
    if not program_traced():
        yield None
        return
    with mlflow.start_span(name=name, span_type=SpanType.CHAIN) as span:
        yield span


@contextmanager
def guard_span(stage: str, fields: list[str]) -> Iterator[Any]:
    if mlflow.get_current_active_span() is None:
        yield None
        return
    with mlflow.start_span(name=f"guard.{stage}", span_type=SpanType.GUARDRAIL) as span:
        span.set_inputs({"fields": fields})  # names only: see the module docstring
        yield span


def record(span, hits: list[Hit], outputs: dict | None) -> None:
    """The hits as the span's `guard.hits` attribute and as trace tags `guard.<name>: <action>`."""
    if span is None:
        return
    span.set_attribute("guard.hits", [asdict(h) for h in hits])
    if outputs is not None:
        span.set_outputs(outputs)
    if hits:
        mlflow.update_current_trace(tags={f"guard.{h.guard}": h.action for h in hits})
