"""Metrics on known inputs: field-wise exact and numeric match, score coercion, GEPA feedback, per-class metrics."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import dspy
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from pipelines.evaluation.metrics import (
    WithFeedback,
    as_score,
    exact_match,
    final_number,
    numeric_match,
    output_fields,
    with_feedback,
)
from pipelines.evaluation.runner import class_accuracy, macro_f1_ci, scored


def two_outputs() -> dspy.Example:
    return dspy.Example(text="bag lost in Rome", intent="lost_luggage", city="rome").with_inputs("text")


# -- exact match ----------------------------------------------------------------------------------


def test_output_fields_are_the_non_input_public_fields():
    ex = dspy.Example(text="x", intent="a", city="b", _note="private").with_inputs("text")
    assert output_fields(ex) == ["intent", "city"]


def test_exact_match_is_the_field_wise_mean():
    gold = two_outputs()
    assert exact_match(gold, dspy.Prediction(intent=" Lost_Luggage ", city="ROME")) == 1.0
    assert exact_match(gold, dspy.Prediction(intent="lost_luggage", city="Paris")) == 0.5
    assert exact_match(gold, dspy.Prediction(intent="check_in", city="rome")) == 0.5
    assert exact_match(gold, dspy.Prediction(intent="check_in", city="paris")) == 0.0
    assert exact_match(gold, dspy.Prediction(intent="lost_luggage")) == 0.5  # a missing field is wrong
    assert exact_match(gold, None) == 0.0


def test_exact_match_on_chosen_fields_and_a_single_output():
    gold = two_outputs()
    pred = dspy.Prediction(intent="lost_luggage", city="paris")
    assert exact_match(gold, pred, fields=["intent"]) == 1.0
    assert exact_match(gold, pred, fields=["city"]) == 0.0
    ex = dspy.Example(text="x", label="check_in").with_inputs("text")
    assert exact_match(ex, dspy.Prediction(label="check_in")) == 1.0
    assert exact_match(ex, dspy.Prediction(label="book_flight")) == 0.0
    assert exact_match(ex, dspy.Prediction(label=None)) == 0.0  # None is not the string "None"
    assert exact_match(dspy.Example(text="x", label="None").with_inputs("text"), dspy.Prediction(label=None)) == 0.0


# -- numeric match --------------------------------------------------------------------------------


def test_final_number_reads_gsm8k_answers_and_plain_text():
    assert final_number("She sold 48/2 = 24 clips in May.\n#### 72") == 72.0
    assert final_number("#### 1,234") == 1234.0
    assert final_number("It costs $1,000.50 in total") == 1000.5
    assert final_number("-3.5 degrees") == -3.5
    assert final_number("3 apples and 4 pears: 7") == 7.0  # the last number
    assert final_number("24 then #### 9 people") == 9.0  # after ####, not the last number before it
    assert final_number(42) == 42.0 and final_number(2.5) == 2.5
    assert final_number("seventy-two") is None and final_number("") is None
    assert final_number(math.inf) is None and final_number(math.nan) is None


def test_numeric_match_on_gsm8k_answers():
    gold = dspy.Example(question="q", answer="She sold 48/2 = 24 clips in May.\n#### 72").with_inputs("question")
    assert numeric_match(gold, dspy.Prediction(answer="72")) == 1.0
    assert numeric_match(gold, dspy.Prediction(answer="The answer is 72.0")) == 1.0
    assert numeric_match(gold, dspy.Prediction(answer=72)) == 1.0
    assert numeric_match(gold, dspy.Prediction(answer="1,072")) == 0.0
    assert numeric_match(gold, dspy.Prediction(answer="24")) == 0.0
    assert numeric_match(gold, dspy.Prediction(answer="seventy-two")) == 0.0
    assert numeric_match(gold, dspy.Prediction(answer=None)) == 0.0
    assert numeric_match(gold, None) == 0.0
    big = dspy.Example(question="q", answer="#### 1,234").with_inputs("question")
    assert numeric_match(big, dspy.Prediction(answer="1234")) == 1.0
    assert numeric_match(big, dspy.Prediction(answer="$1,234.00")) == 1.0


def test_numeric_match_is_field_wise_too():
    gold = dspy.Example(q="q", total="#### 12", per_person="3").with_inputs("q")
    assert numeric_match(gold, dspy.Prediction(total="12", per_person="3.0")) == 1.0
    assert numeric_match(gold, dspy.Prediction(total="12", per_person="4")) == 0.5
    assert numeric_match(gold, dspy.Prediction(total="12", per_person="4"), fields=["total"]) == 1.0


# -- score coercion -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, 1.0), (False, 0.0), (0.25, 0.25), (1, 1.0), (np.float64(0.5), 0.5), (None, 0.0)],
)
def test_as_score_accepts_bools_numbers_and_none(value, expected):
    assert as_score(value) == expected and isinstance(as_score(value), float)


def test_as_score_reads_a_prediction():
    assert as_score(dspy.Prediction(score=0.75, feedback="ok")) == 0.75
    assert as_score(dspy.Prediction(score=True)) == 1.0


@pytest.mark.parametrize("value", [1.5, -0.1, math.nan, math.inf, dspy.Prediction(score=2.0)])
def test_as_score_refuses_values_outside_0_1(value):
    with pytest.raises(ValueError, match="bool or a float in \\[0, 1\\]"):
        as_score(value)


def test_scored_coerces_and_keeps_the_name():
    def my_metric(example, prediction, trace=None):
        return dspy.Prediction(score=prediction.ok, feedback="x")

    s = scored(my_metric)
    assert s.__name__ == "my_metric"
    assert s(None, dspy.Prediction(ok=True)) == 1.0 and s(None, dspy.Prediction(ok=False)) == 0.0


# -- GEPA feedback --------------------------------------------------------------------------------


def test_with_feedback_names_each_field_with_its_values():
    metric = with_feedback(exact_match)
    assert isinstance(metric, WithFeedback) and metric.__name__ == "exact_match"
    result = metric(two_outputs(), dspy.Prediction(intent="lost_luggage", city="paris"))
    assert isinstance(result, dspy.Prediction) and result.score == 0.5
    assert result.feedback.startswith("Score 0.50.")
    assert "intent: predicted 'lost_luggage', expected 'lost_luggage'" in result.feedback
    assert "city: predicted 'paris', expected 'rome'" in result.feedback


def test_with_feedback_takes_gepa_arguments_and_a_missing_prediction():
    metric = with_feedback(exact_match)
    gold = two_outputs()
    pred = dspy.Prediction(intent="check_in", city="rome")
    result = metric(gold, pred, None, "classify.predict", None)  # GEPA's five-argument call
    assert result.score == 0.5
    none = metric(gold, None)
    assert none.score == 0.0 and "intent: predicted None, expected 'lost_luggage'" in none.feedback


def test_with_feedback_passes_a_metrics_own_feedback_through():
    own = dspy.Prediction(score=0.3, feedback="the city is spelled wrong")

    def judged(example, prediction, trace=None):
        return own

    assert with_feedback(judged)(two_outputs(), dspy.Prediction(intent="x", city="y")) is own


def test_with_feedback_writes_feedback_for_a_score_only_prediction_and_bool_metrics():
    def score_only(example, prediction, trace=None):
        return dspy.Prediction(score=0.25)

    result = with_feedback(score_only)(two_outputs(), dspy.Prediction(intent="x", city="rome"))
    assert result.score == 0.25 and "city: predicted 'rome', expected 'rome'" in result.feedback
    boolean = with_feedback(lambda g, p, t=None: p.city == g.city)(two_outputs(), dspy.Prediction(city="rome"))
    assert boolean.score == 1.0 and "Score 1.00." in boolean.feedback
    with pytest.raises(ValueError):
        with_feedback(lambda g, p, t=None: 3)(two_outputs(), dspy.Prediction(city="rome"))


def test_with_feedback_names_a_partial_after_its_function():
    assert with_feedback(functools.partial(numeric_match, fields=["answer"])).__name__ == "numeric_match"


# -- classification metrics -----------------------------------------------------------------------

LABELS = ["a", "b", "c"]
EXPECTED = ["a", "a", "b", "b", "b", "c", "c", "a", "b", "c"]
PREDICTED = ["a", "b", "b", "b", None, "c", "a", "a", "zzz", "c"]  # None and "zzz": wrong answers


def label_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_id": range(len(EXPECTED)),
            "text": [f"t{i}" for i in range(len(EXPECTED))],
            "expected.intent": EXPECTED,
            "predicted.intent": PREDICTED,
            "score": [float(e == p) for e, p in zip(EXPECTED, PREDICTED, strict=True)],
        }
    )


def test_macro_f1_matches_sklearn():
    f1, _, _ = macro_f1_ci(label_table(), "intent", LABELS)
    sk = f1_score(EXPECTED, [p or "" for p in PREDICTED], average="macro", labels=LABELS, zero_division=0)
    assert f1 == pytest.approx(sk)
    # by hand: a P=2/3 R=2/3 F1=2/3; b P=2/3 R=1/2 F1=4/7; c P=1 R=2/3 F1=4/5
    assert f1 == pytest.approx((2 / 3 + 4 / 7 + 4 / 5) / 3)


def test_macro_f1_interval_contains_the_value():
    f1, low, high = macro_f1_ci(label_table(), "intent", LABELS)
    assert low <= f1 <= high
    assert low < high
    assert 0.0 <= low and high <= 1.0


def test_per_class_accuracy():
    accuracy = {r["label"]: r["accuracy"] for r in class_accuracy(label_table(), "intent", LABELS)}
    assert accuracy == pytest.approx({"a": 2 / 3, "b": 2 / 4, "c": 2 / 3})
    # a label never expected has no accuracy; it still counts (as 0) in macro F1, as in sklearn
    wider = [*LABELS, "d"]
    assert "d" not in {r["label"] for r in class_accuracy(label_table(), "intent", wider)}
    assert macro_f1_ci(label_table(), "intent", wider)[0] == pytest.approx(
        f1_score(EXPECTED, [p or "" for p in PREDICTED], average="macro", labels=wider, zero_division=0)
    )


def test_a_perfect_table_scores_one():
    table = label_table().assign(**{"predicted.intent": EXPECTED})
    f1, low, high = macro_f1_ci(table, "intent", LABELS)
    assert f1 == high == 1.0
    # Not a degenerate interval: a resample that misses a class scores it 0 (sklearn's labels=..., zero_division=0).
    assert low <= 1.0
    assert {r["accuracy"] for r in class_accuracy(table, "intent", LABELS)} == {1.0}


# -- the GSM8K task -------------------------------------------------------------------------------


def test_gsm8k_task_is_scored_by_numeric_match(make_cfg):
    from hydra.utils import instantiate

    from pipelines.data.task import Task

    cfg = make_cfg("train", ["task=gsm8k"], fake=False)
    assert cfg.task.metric._target_ == "pipelines.evaluation.metrics.numeric_match"
    if not Path(cfg.task.data.path).is_file():
        pytest.skip(f"shared dataset not present: {cfg.task.data.path}")
    task = Task.from_config(cfg.task)
    assert task.contract.input_names == ["question"] and task.contract.output_names == ["answer"]
    assert task.splits.labels == {} and task.output_label_sets == {}
    ex = task.examples("train")[0]
    assert set(ex.inputs().keys()) == {"question"} and isinstance(ex.answer, int)
    metric = instantiate(cfg.task.metric)
    assert task.metric.__name__ == "numeric_match"
    assert metric(ex, dspy.Prediction(answer=str(final_number(ex.answer)))) == 1.0
    # The demo-only reasoning the examples carry is not scored (the task's metric scores its outputs).
    assert metric(ex, dspy.Prediction(answer=str(ex.answer), reasoning="unrelated")) == 1.0
