"""Fields derived from a column (`task.data.derive`): the rule in general, and GSM8K's two fields on real rows."""

from __future__ import annotations

from pathlib import Path

import dspy
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipelines.data.splits import DataError, derive_field, load_splits
from pipelines.data.task import Task

SIZES = {"train_size": 2, "val_size": 1, "dev_size": 1, "test_size": 1}


def packed(path) -> str:
    rows = [
        {"q": f"what is {i} + {i}?", "sol": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i:,}"} for i in range(5)
    ]
    rows[4]["sol"] = "2,000 + 2,000 = 4,000\n#### 4,000"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    return str(path)


RULES = {
    "total": {"from": "sol", "match": "####(.*)$", "remove": ","},
    "working": {"from": "sol", "match": "^(.*)####", "remove": "<<[^>]*>>"},
}


def test_derived_fields_are_cut_from_a_column_and_extras_travel_with_the_examples(tmp_path):
    splits = load_splits(
        packed(tmp_path / "packed.jsonl"),
        inputs=["question"],
        outputs=["total"],
        columns={"question": "q"},
        derive=RULES,
        **SIZES,
    )
    assert splits.extras == ["working"]  # neither input nor output: carried for demos only
    assert splits.name == "packed"
    by_id = {row["row_id"]: row for split in splits.frames.values() for row in split.to_dict("records")}
    assert by_id[3]["total"] == "6" and by_id[3]["working"] == "3 + 3 = 6"
    assert by_id[4]["total"] == "4000" and by_id[4]["working"] == "2,000 + 2,000 = 4,000"  # `remove` is per field
    example = splits.examples("train")[0]
    assert set(example.inputs().keys()) == {"question"} and set(example.labels().keys()) == {"total", "working"}
    assert list(splits.frame("test").columns) == ["row_id", "question", "total", "working"]


def test_a_match_without_a_group_keeps_the_whole_match_and_no_match_is_an_empty_value(tmp_path):
    raw = pd.DataFrame({"sol": ["pay 12 dollars", "no number here"]})
    derived = derive_field(raw, "n", {"from": "sol", "match": r"\d+"}, "f")
    assert derived[0] == "12" and pd.isna(derived[1])
    path = packed(tmp_path / "packed.jsonl")
    with pytest.raises(DataError, match=r"empty values in column .*derive.total"):
        load_splits(
            path, inputs=["q"], outputs=["total"], derive={"total": {"from": "sol", "match": "@@(.*)"}}, **SIZES
        )


@pytest.mark.parametrize(
    ("derive", "columns", "message"),
    [
        ({"total": {"match": "(.*)"}}, None, "needs `from`"),
        ({"total": {"from": "sol", "regex": "(.*)"}}, None, "needs `from`"),
        ({"total": {"from": "nope"}}, None, "reads column 'nope'"),
        ({"total": {"from": "sol", "match": "(unclosed"}}, None, "bad regex"),
        ({"total": {"from": "sol"}}, {"total": "sol"}, "both mapped"),
    ],
)
def test_bad_derive_rules_are_refused_with_the_field_named(tmp_path, derive, columns, message):
    with pytest.raises(DataError, match=message):
        load_splits(
            packed(tmp_path / "p.jsonl"), inputs=["q"], outputs=["total"], derive=derive, columns=columns, **SIZES
        )


# -- GSM8K: the task YAML's rules on real rows of the shared dataset --------------------------------------------

# Rows 0, 1, 345 and 5715 of ../shared/datasets/gsm8k/train.jsonl: two plain, a thousands comma, a negative answer.
GSM8K_ROWS = {
    0: (72, "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."),
    1: (10, "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10."),
    345: (1080, "This means that in 30 days he earns $36 * 30 = $1080."),
    5715: (-7, "The average temperature was -7 degrees Fahrenheit."),
}


@pytest.fixture
def gsm8k_cfg(make_cfg):
    cfg = make_cfg("train", ["experiment=gsm8k"], fake=False)
    if not Path(cfg.task.data.path).is_file():
        pytest.skip(f"GSM8K not present on this machine: {cfg.task.data.path}")
    return cfg


def test_gsm8k_yaml_derives_the_number_and_the_clean_reasoning_from_real_rows(gsm8k_cfg):
    data = gsm8k_cfg.task.data
    raw = pd.read_json(data.path, lines=True).loc[list(GSM8K_ROWS)]
    rules = OmegaConf.to_container(data.derive)
    answers = derive_field(raw, "answer", rules["answer"], data.path)
    reasoning = derive_field(raw, "reasoning", rules["reasoning"], data.path)
    for row, (number, text) in GSM8K_ROWS.items():
        assert int(answers[row]) == number, row
        assert reasoning[row].endswith(text), row
        assert "<<" not in reasoning[row] and "####" not in reasoning[row], row


def test_gsm8k_examples_carry_an_int_answer_and_the_reasoning_the_metric_does_not_score(gsm8k_cfg):
    task = Task.from_config(gsm8k_cfg.task)
    assert task.contract.output_names == ["answer"] and task.splits.extras == ["reasoning"]
    assert task.contract.mlflow_signature().outputs.input_names() == ["answer"]
    for split in ("train", "test"):
        for example in task.examples(split):
            assert type(example.answer) is int and example.reasoning and "<<" not in example.reasoning
    gold = task.examples("train")[0]
    # Scored on the number only: a wrong (or no) reasoning beside the right number is right, and vice versa.
    assert task.metric(gold, dspy.Prediction(answer=gold.answer, reasoning="no idea")) == 1.0
    assert task.metric(gold, dspy.Prediction(answer=gold.answer + 1, reasoning=gold.reasoning)) == 0.0
    assert task.metric(gold, dspy.Prediction(answer=f"{gold.answer:,} dollars")) == 1.0
