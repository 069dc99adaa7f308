"""Metrics with DSPy's signature `metric(example, prediction, trace=None) -> bool | float | dspy.Prediction`.

The shipped metrics compare every output field the example carries (`example.labels()`: the fields
that are not inputs) and average them, so a task with two outputs (an intent and a city) is scored
field by field with no field named here. Plain module-level functions: MLflow's DSPy autolog names
the assessment it attaches to each evaluation trace after `metric.__name__`.

    >>> gold = dspy.Example(text="bag lost in Rome", intent="lost_luggage", city="rome").with_inputs("text")
    >>> exact_match(gold, dspy.Prediction(intent="lost_luggage", city="Paris"))
    0.5
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import dspy


def output_fields(example: dspy.Example) -> list[str]:
    """The example's expected fields: everything that is not an input (and not private)."""
    return [k for k in example.labels().keys() if not k.startswith("_")]


def _norm(value) -> str:
    return str(value).strip().lower()


def _field_mean(example, prediction, same: Callable[[object, object], bool], fields=None) -> float:
    fields = list(fields or output_fields(example))
    if prediction is None or not fields:
        return 0.0
    hits = [same(example[f], getattr(prediction, f, None)) for f in fields]
    return sum(hits) / len(hits)


def exact_match(example: dspy.Example, prediction, trace=None, fields: list[str] | None = None) -> float:
    """Share of output fields whose prediction equals the gold value, ignoring case and surrounding space."""
    return _field_mean(example, prediction, lambda g, p: p is not None and _norm(p) == _norm(g), fields)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text) -> float | None:
    """The answer's number: what follows GSM8K's `####` if present, else the last number in the text."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text) if math.isfinite(text) else None
    text = str(text)
    if "####" in text:
        text = text.split("####")[-1]
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    try:
        return float(numbers[-1].replace(",", ""))
    except ValueError:
        return None


def numeric_match(example: dspy.Example, prediction, trace=None, fields: list[str] | None = None) -> float:
    """Share of output fields whose final number equals the gold one (GSM8K: the number after `####`)."""

    def same(gold, predicted) -> bool:
        g, p = final_number(gold), final_number(predicted) if predicted is not None else None
        return g is not None and p is not None and abs(g - p) < 1e-6

    return _field_mean(example, prediction, same, fields)


def as_score(value) -> float:
    """A metric's result as a float in [0, 1]: bools, numbers and `dspy.Prediction(score=...)` alike."""
    if isinstance(value, dspy.Prediction):
        value = value.score
    if value is None:
        return 0.0
    score = float(value)
    if not (0.0 <= score <= 1.0) or math.isnan(score):
        raise ValueError(f"a metric must return a bool or a float in [0, 1], got {value!r}")
    return score


class WithFeedback:
    """GEPA's metric from any task metric: the score plus, unless the metric gives its own, feedback
    naming each output field's expected and predicted value.

    GEPA calls `metric(gold, pred, trace, pred_name, pred_trace)`; DSPy's evaluators call it with three.
    """

    def __init__(self, metric: Callable):
        self.metric = metric
        self.__name__ = getattr(metric, "__name__", None) or getattr(
            getattr(metric, "func", None), "__name__", "metric"
        )

    def __call__(self, gold, pred, trace=None, pred_name=None, pred_trace=None):
        result = self.metric(gold, pred, trace)
        if isinstance(result, dspy.Prediction) and getattr(result, "feedback", None):
            return result
        score = as_score(result)
        parts = []
        scored = (getattr(self.metric, "keywords", None) or {}).get("fields")  # a partial's `fields=`: those only
        for f in scored or output_fields(gold):
            predicted = getattr(pred, f, None) if pred is not None else None
            parts.append(f"{f}: predicted {predicted!r}, expected {gold[f]!r}")
        return dspy.Prediction(score=score, feedback=f"Score {score:.2f}. " + "; ".join(parts))


def with_feedback(metric: Callable) -> WithFeedback:
    """`metric` as GEPA's feedback metric: its score, with each output field's expected and predicted value
    as the feedback (the default `task.feedback_metric`)."""
    return WithFeedback(metric)
