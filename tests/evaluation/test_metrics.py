"""Metrics on known inputs, and the GSM8K task (free-text answers, numeric match)."""

from __future__ import annotations

from pathlib import Path

import dspy
import pandas as pd
import pytest
from hydra.utils import instantiate

from pipelines.evaluation.scoring import classification_metrics
from pipelines.evaluation.metrics import exact_match, exact_match_with_feedback, final_number, numeric_match
from pipelines.programs import QA, build_program


def test_numeric_match_reads_gsm8k_answers():
    gold = dspy.Example(answer="She sold 48/2 = 24 clips in May.\n#### 72")
    assert final_number(gold.answer) == 72.0
    assert numeric_match(gold, dspy.Prediction(answer="72")) == 1.0
    assert numeric_match(gold, dspy.Prediction(answer="The answer is 72.0")) == 1.0
    assert numeric_match(gold, dspy.Prediction(answer="1,072")) == 0.0
    assert numeric_match(gold, dspy.Prediction(answer="seventy-two")) == 0.0
    assert final_number("#### 1,234") == 1234.0 and final_number("-3.5 degrees") == -3.5


def test_exact_match_and_feedback():
    ex = dspy.Example(text="x", label="check_in")
    assert exact_match(ex, dspy.Prediction(label=" Check_In ")) == 1.0
    assert exact_match(ex, dspy.Prediction(label="book_flight")) == 0.0
    fb = exact_match_with_feedback(ex, dspy.Prediction(label="book_flight"))
    assert fb.score == 0.0 and "check_in" in fb.feedback and "book_flight" in fb.feedback


def test_macro_f1_and_per_class_accuracy_on_known_table():
    table = pd.DataFrame({"expected": ["a", "a", "b", "b"], "predicted": ["a", "b", "b", "b"]})
    m = classification_metrics(table, ["a", "b"], "dev")
    # class a: P=1, R=0.5, F1=2/3; class b: P=2/3, R=1, F1=0.8 -> macro 0.7333
    assert m["dev_macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["dev_class_accuracy.a"] == 0.5 and m["dev_class_accuracy.b"] == 1.0
    assert m["dev_macro_f1_ci95_low"] <= m["dev_macro_f1"] <= m["dev_macro_f1_ci95_high"]


def test_gsm8k_task_composes_with_the_qa_program(make_cfg):
    cfg = make_cfg("train", ["experiment=gsm8k"], fake=False)
    assert cfg.program._target_ == "pipelines.programs.QA"
    assert cfg.task.metric._target_ == "pipelines.evaluation.metrics.numeric_match"
    path = Path(cfg.task.data.path)
    if not path.is_file():
        pytest.skip(f"shared dataset not present: {path}")
    splits = instantiate(cfg.task.data)
    assert splits.labels is None
    ex = splits.train[0]
    assert set(ex.inputs().keys()) == {"question"} and "####" in ex.answer
    program = build_program(cfg.program, splits.labels)
    assert isinstance(program, QA)
    assert list(program.predictors()[0].signature.output_fields) == ["reasoning", "answer"]


def test_a_classifier_on_a_free_text_task_is_a_clear_error(make_cfg):
    cfg = make_cfg("train", ["task=gsm8k"], fake=False)
    with pytest.raises(ValueError, match="program=qa"):
        build_program(cfg.program, None)
