"""A reasoning program as a model (`experiment=gsm8k`): clean labelled demos in, the number alone served out."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pipelines.data.task import Task
from pipelines.lm.json_adapter import JSONAdapter
from pipelines.model.log import log_program_model
from pipelines.model.spec import build_spec
from pipelines.optimizers.compile import build_optimizer, compile_program
from pipelines.programs import build_program


def test_gsm8k_demos_show_the_gold_reasoning_and_the_served_model_answers_a_number(make_cfg, tmp_path):
    cfg = make_cfg("main", ["experiment=gsm8k"])  # the fake LM: reasoning is a fixed sentence, a number is 1
    if not Path(cfg.task.data.path).is_file():
        pytest.skip(f"GSM8K not present on this machine: {cfg.task.data.path}")
    task = Task.from_config(cfg.task)
    lm = instantiate(cfg.lm)
    program, program_config = build_program(cfg.program, task.contract)
    compiled = compile_program(build_optimizer(cfg.optimizer, lm), program, task.examples("train"), lm=lm)

    # LabeledFewShot's demos are the train rows: the clean gold reasoning and the bare number, as the model must write.
    (predictor,) = compiled.predictors()
    assert list(predictor.signature.output_fields) == ["reasoning", "answer"]
    assert len(predictor.demos) == cfg.optimizer.compiler.k
    messages = JSONAdapter().format(predictor.signature, predictor.demos, {"question": "What is 2 + 3?"})
    replies = [json.loads(m["content"]) for m in messages if m["role"] == "assistant"]
    assert len(replies) == len(predictor.demos)
    for reply, demo in zip(replies, predictor.demos, strict=True):
        assert reply == {"reasoning": demo.reasoning, "answer": demo.answer} and isinstance(reply["answer"], int)
        assert "<<" not in reply["reasoning"] and "####" not in reply["reasoning"]

    mlflow.set_tracking_uri(cfg.tracking.uri)
    mlflow.set_experiment("reasoning")
    spec = build_spec(
        program_config=program_config,
        contract=task.contract,
        lm_config=OmegaConf.to_container(cfg.lm, resolve=True),
        adapter_config=OmegaConf.to_container(cfg.adapter, resolve=True),
        task_config=task.config,
    )
    with mlflow.start_run():
        info = log_program_model(compiled, spec)
    # The served signature's output is the number alone: the reasoning stays inside the program.
    outputs = info.signature.outputs.to_dict()
    assert outputs == [{"type": "long", "name": "answer", "required": True}]
    served = mlflow.pyfunc.load_model(info.model_uri)
    questions = [e.question for e in task.examples("test")[:2]]
    answers = served.predict(pd.DataFrame({"question": questions}))
    assert list(answers.columns) == ["answer"]
    assert answers["answer"].tolist() == [1, 1]
