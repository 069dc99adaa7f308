"""NeighbourTally: the LM reads the retrieved neighbours and how their answers split, and the registered model
sends the same requests. The fake LM copies the nearest demo's label: only our wiring is tested."""

from __future__ import annotations

import dspy
import mlflow
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipelines.config import CONF_DIR
from pipelines.data.contract import Contract
from pipelines.lm.json_adapter import JSONAdapter
from pipelines.model.log import log_program_model
from pipelines.model.spec import build_spec
from pipelines.programs import NeighbourTally, build_program
from pipelines.programs.neighbour_tally import TALLY_FIELD
from tests.fakes import fake_lm
from tests.programs.test_retrieved_demos import CONTRACT, QUERIES, pool

PROGRAM_YAML = CONF_DIR / "program" / "neighbour_tally.yaml"


def tally_program(k: int = 3) -> tuple[NeighbourTally, dict]:
    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "program" / "retrieved_demos.yaml"), OmegaConf.load(PROGRAM_YAML))
    cfg = OmegaConf.merge({k_: v for k_, v in cfg.items() if k_ != "defaults"}, {"k": k})
    built, resolved = build_program(cfg, CONTRACT)
    built.predict.demos = pool()
    return built, resolved


def test_the_lm_gets_the_neighbours_tally_and_each_demo_its_own():
    program, _ = tally_program(k=3)
    assert isinstance(program, NeighbourTally)
    assert TALLY_FIELD in program.predict.signature.input_fields
    positions = program.nearest({"text": "my card delivery has not arrived"})
    assert program.tally(positions) == "card_arrival: 2, pin_blocked: 1"  # most frequent first

    sent = []
    original = program.predict.forward

    def spy(**kwargs):
        sent.append(kwargs)
        return original(**kwargs)

    program.predict.forward = spy
    with dspy.context(lm=fake_lm(default="pin_blocked"), adapter=JSONAdapter()):
        answer = program(text="my card delivery has not arrived").label
    assert answer == "card_arrival"
    call = sent[0]
    assert call[TALLY_FIELD] == program.tally(positions)
    assert len(call["demos"]) == 3 and all(TALLY_FIELD in demo for demo in call["demos"])
    # A demo's tally counts its own neighbours, never itself: each card row sees the other card row only.
    tallies = {demo["text"]: demo[TALLY_FIELD] for demo in call["demos"]}
    assert tallies["my card delivery is taking weeks"].startswith("card_arrival: 1,")
    assert tallies["when will my new card arrive in the post"].startswith("card_arrival: 1,")


def test_a_task_with_the_tally_fields_name_is_refused():
    clash = Contract.from_config({TALLY_FIELD: {"type": "str"}}, {"label": {"type": "label", "labels": ["a"]}}, "x")
    with pytest.raises(ValueError, match=TALLY_FIELD):
        NeighbourTally(clash.to_dict())


def test_a_registered_model_sends_what_the_program_sent(tmp_path):
    program, program_config = tally_program(k=3)
    with dspy.context(lm=fake_lm(default="pin_blocked"), adapter=JSONAdapter()):
        expected = [program(text=q).label for q in QUERIES]
    assert expected == ["card_arrival", "exchange_rate", "pin_blocked"]

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        mlflow.set_experiment("neighbour_tally")
        spec = build_spec(
            program_config=program_config,
            contract=CONTRACT,
            lm_config={"_target_": "tests.fakes.fake_lm", "model": "fake/keyword", "default": "pin_blocked"},
            adapter_config={"_target_": "pipelines.lm.json_adapter.JSONAdapter"},
            task_config={},
        )
        with mlflow.start_run():
            info = log_program_model(program, spec)
        served = mlflow.pyfunc.load_model(info.model_uri)
        answers = served.predict(pd.DataFrame({"text": QUERIES}))["label"].tolist()
    finally:
        mlflow.set_tracking_uri(None)
    assert answers == expected
