"""Metrics with DSPy's signature `metric(example, prediction, trace=None) -> float | bool`.

Plain module-level functions (not partials): MLflow's DSPy autolog names the assessment it attaches
to each evaluation trace after `metric.__name__`.
"""

from __future__ import annotations

import re

import dspy


def _norm(value) -> str:
    return str(value).strip().lower()


def exact_match(example: dspy.Example, prediction: dspy.Prediction, trace=None, field: str = "label") -> float:
    """1.0 when the predicted field equals the gold one, ignoring case and surrounding space."""
    predicted = getattr(prediction, field, None) if prediction is not None else None
    return float(predicted is not None and _norm(predicted) == _norm(example[field]))


def exact_match_with_feedback(gold, pred, trace=None, pred_name=None, pred_trace=None, field: str = "label"):
    """`exact_match` plus the textual feedback GEPA's reflection step learns from."""
    score = exact_match(gold, pred, trace, field=field)
    predicted = getattr(pred, field, None) if pred is not None else None
    if score:
        feedback = f"Correct: the {field} is {gold[field]!r}."
    else:
        feedback = f"Wrong: predicted {predicted!r}, but the correct {field} is {gold[field]!r}."
    return dspy.Prediction(score=score, feedback=feedback)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text) -> float | None:
    """The answer's number: what follows GSM8K's `####` if present, else the last number in the text."""
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


def numeric_match(example: dspy.Example, prediction: dspy.Prediction, trace=None, field: str = "answer") -> float:
    """1.0 when the predicted final number equals the gold one (GSM8K: the number after `####`)."""
    gold = final_number(example[field])
    predicted = final_number(getattr(prediction, field, "")) if prediction is not None else None
    return float(gold is not None and predicted is not None and abs(gold - predicted) < 1e-6)
