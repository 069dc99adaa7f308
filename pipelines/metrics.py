"""Metrics with DSPy's signature `metric(example, prediction, trace=None) -> float | bool`.

Plain module-level functions (not partials): MLflow's DSPy autolog names the assessment it attaches
to each evaluation trace after `metric.__name__`.
"""

from __future__ import annotations

import dspy


def _norm(value) -> str:
    return str(value).strip().lower()


def exact_match(example: dspy.Example, prediction: dspy.Prediction, trace=None, field: str = "label") -> float:
    """1.0 when the predicted field equals the gold one, ignoring case and surrounding space."""
    predicted = getattr(prediction, field, None) if prediction is not None else None
    return float(predicted is not None and _norm(predicted) == _norm(example[field]))
