"""Small registered models for the serving tests and `scripts/measure_serving.py`: any contract, any program.

`log_served_model` logs a program with `log_program_model` (the project's own model format) into a sqlite
store and registers it as `NAME@champion`, so `serve` finds it as it finds a trained champion. The LM is
the fake OpenAI server over HTTP (`provider_config`: the provider path, LiteLLM, streaming chunks, latency)
or any LM config (the embedded model's, for the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
from omegaconf import OmegaConf

from pipelines.data.contract import Contract
from pipelines.model.log import log_program_model
from pipelines.model.spec import build_spec
from pipelines.programs import build_program

INTENTS = ["lost_luggage", "refund_request", "cancel_booking", "book_flight"]
# A word the fakes map to each intent (`tests.fakes.TRAVEL_RULES`): rows whose right answers differ.
KEYWORDS = [
    ("suitcase", "lost_luggage"),
    ("refund", "refund_request"),
    ("cancel", "cancel_booking"),
    ("book", "book_flight"),
]
# Two inputs, two outputs: nothing in serving may assume `text` -> `label`.
TWO_BY_TWO = Contract.from_config(
    inputs={"ticket": {"type": "str"}, "channel": {"type": "label", "labels": ["email", "phone"]}},
    outputs={"label": {"type": "label", "labels": INTENTS}, "reply": {"type": "str"}},
    instructions="Classify the ticket and write a one-line reply.",
)
PREDICT = {"_target_": "pipelines.programs.SingleStep", "signature": None}
DRAFT_VERIFY = {"_target_": "pipelines.programs.DraftThenVerify", "signature": None, "draft_reasoning": True}
ADAPTER = {"_target_": "pipelines.lm.json_adapter.JSONAdapter"}


def provider_config(api_base: str) -> dict:
    """The fake OpenAI server as a provider LM (no cache: every request must reach the server)."""
    return {
        "_target_": "pipelines.lm.provider_lm",
        "model": "openai/fake",
        "api_base": api_base,
        "require_key": False,
        "num_retries": 0,
        "timeout": 30,
        "cache": False,
    }


@dataclass
class ServedModel:
    tracking_uri: str
    name: str
    contract: Contract

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@champion"


def log_served_model(store: Path, contract: Contract, program: dict, lm: dict, name: str = "served") -> ServedModel:
    uri = f"sqlite:///{store}/mlflow.db"
    store.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("serving")
    built, program_config = build_program(OmegaConf.create(program), contract)
    spec = build_spec(
        program_config=program_config, contract=contract, lm_config=lm, adapter_config=ADAPTER, task_config={}
    )
    with mlflow.start_run():
        info = log_program_model(built, spec)
    version = mlflow.register_model(info.model_uri, name)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", version.version)
    return ServedModel(uri, name, contract)
