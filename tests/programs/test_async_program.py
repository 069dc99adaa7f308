"""A user's async program (`aforward` only, two stages: `examples/async_program`) trains, evaluates, registers and
serves; the agent server awaits it (`acall`), many streams on one event loop. Fake LM throughout: fast."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import dspy
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.types.responses import ResponsesAgentRequest
from omegaconf import OmegaConf, open_dict

from pipelines.config import PROJECT_ROOT
from pipelines.main import run_main
from pipelines.programs import SingleStep, is_async, runnable_sync
from pipelines.serving.agent_server import ProgramAgent
from tests.fakes import fake_lm

EXAMPLE = PROJECT_ROOT / "examples" / "async_program"
TEXTS = ["I want a refund", "cancel my booking", "my suitcase is lost", "change my seat please"]


@pytest.fixture
def user_package(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from async_pipeline import NoteThenAnswer

    return NoteThenAnswer


@pytest.fixture
def champion(make_cfg, user_package):
    cfg = make_cfg("main", ["optimizer=bootstrap"])
    with open_dict(cfg):
        cfg.program = OmegaConf.load(EXAMPLE / "conf" / "program" / "note_then_answer.yaml")
    trained, tested, registered = run_main(cfg)
    return cfg, trained, tested, registered


def test_an_async_only_program_is_callable_both_ways(user_package, make_cfg):
    from pipelines.data.task import Task

    contract = Task.from_config(make_cfg("train").task).contract
    assert "forward" not in vars(user_package)  # written with aforward only
    program = runnable_sync(user_package(contract.to_dict()))
    assert is_async(program) and not is_async(SingleStep(contract.to_dict()))
    with dspy.context(lm=fake_lm(), adapter=dspy.JSONAdapter()):
        assert program(text="I want a refund").label == "refund_request"  # sync: forward runs aforward
        assert asyncio.run(program.acall(text="I want a refund")).label == "refund_request"


def test_it_trains_evaluates_registers_and_serves(champion):
    cfg, trained, tested, registered = champion
    client = MlflowClient()
    for run_id in (trained.run_id, tested.run_id, registered.run_id):
        assert client.get_run(run_id).info.status == "FINISHED"
    assert trained.selection_score > 0.3 and tested.score > 0.3  # the fake LM's keyword rules, through 2 stages
    assert registered.promoted
    uri = f"models:/{registered.name}@champion"
    local = Path(mlflow.artifacts.download_artifacts(uri))
    assert (local / "code" / "async_pipeline" / "note_then_answer.py").exists()  # the user's package travels
    model = mlflow.pyfunc.load_model(uri)
    answers = model.predict(pd.DataFrame({"text": TEXTS}))  # the scoring server's path: sync rows
    assert answers["label"].tolist()[:3] == ["refund_request", "cancel_booking", "lost_luggage"]


def test_the_agent_server_awaits_it_many_streams_on_one_loop(champion, user_package, monkeypatch):
    *_, registered = champion
    model = mlflow.pyfunc.load_model(f"models:/{registered.name}@champion").unwrap_python_model()
    agent = ProgramAgent(model)
    threads: set[str] = set()
    aforward = user_package.aforward

    async def recorded(self, **inputs):
        threads.add(threading.current_thread().name)
        return await aforward(self, **inputs)

    monkeypatch.setattr(user_package, "aforward", recorded)

    def request(text: str) -> ResponsesAgentRequest:
        return ResponsesAgentRequest(input=[{"role": "user", "content": text}])

    async def one_stream(text: str) -> dict:
        events = [event async for event in agent.astream(request(text))]
        return events[-1]["custom_outputs"]

    async def all_at_once():
        streams = await asyncio.gather(*(one_stream(t) for t in TEXTS * 4))
        invoked = await asyncio.gather(*(agent.ainvoke(request(t)) for t in TEXTS))
        return streams, invoked, threading.current_thread().name

    streams, invoked, loop_thread = asyncio.run(all_at_once())
    assert [s["label"] for s in streams[:3]] == ["refund_request", "cancel_booking", "lost_luggage"]
    assert [i["custom_outputs"]["label"] for i in invoked[:3]] == ["refund_request", "cancel_booking", "lost_luggage"]
    assert threads == {loop_thread}  # 20 answers, every one awaited on the one event loop: no thread per stream
