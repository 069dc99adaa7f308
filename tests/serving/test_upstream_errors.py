"""A served model whose LM fails answers a 5xx naming the cause in one line: no stack trace, no key, and the
server keeps answering. Through MLflow's own scoring server app (FastAPI TestClient), in process."""

from __future__ import annotations

import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow.pyfunc import scoring_server

from benchmarks.fake_provider import FakeProvider
from pipelines.data.contract import Contract
from pipelines.lm.secrets import register_secret
from pipelines.model.lm_engine import ENV as LM_ENGINE_ENV
from tests.fakes import TRAVEL_RULES
from tests.serving.models import PREDICT, log_served_model

KEY = "sk-upstream-test-0123456789abcdef"
ROWS = {"dataframe_split": {"columns": ["text"], "data": [["my suitcase is gone"]]}}
# What the fake provider answers (`tests.fakes.TRAVEL_RULES`): a text in, an intent out.
INTENTS = Contract.from_config(
    inputs={"text": {"type": "str"}},
    outputs={"label": {"type": "label", "labels": sorted(set(TRAVEL_RULES.values()))}},
    instructions="Classify the message.",
)


def served_app(tmp_path, fake: FakeProvider, monkeypatch, timeout: float = 30, model: str = "openai/fake"):
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", KEY)
    lm = {
        "_target_": "pipelines.lm.provider_lm",
        "model": model,
        "self_hosted": not model.startswith("openai/"),  # declared as your own server (`lm=openai_compatible`)
        "api_base": fake.url,
        "api_key_env": "FAKE_UPSTREAM_KEY",
        "num_retries": 0,
        "timeout": timeout,
        "cache": False,
        "engine": "litellm",  # registered on LiteLLM, so `serve lm_engine=` has an engine to switch from
    }
    served = log_served_model(tmp_path / "store", INTENTS, PREDICT, lm)
    return TestClient(scoring_server.init(mlflow.pyfunc.load_model(served.uri)))


# The registered engine (LiteLLM), `serve`'s default (auto: DSPy's choice), or `serve lm_engine=lm15`
@pytest.mark.parametrize("engine", [None, "auto", "lm15"])
@pytest.mark.parametrize("model", ["openai/fake", "self-hosted/fake"])
@pytest.mark.parametrize(
    ("fault", "status", "says"),
    [
        ({"fail_all": True}, 503, "unavailable; retry later"),
        ({"too_many": 1000, "retry_after": 0.01}, 503, "unavailable; retry later"),
        ({"hang_all": True, "hang_s": 5}, 504, "timed out"),
        ({"echo_auth": True}, 500, "failed to answer"),
    ],
)
def test_an_lm_failure_is_a_short_5xx_without_trace_or_key(tmp_path, monkeypatch, fault, status, says, engine, model):
    register_secret(KEY)
    if engine:
        monkeypatch.setenv(LM_ENGINE_ENV, engine)
    with FakeProvider(**fault) as fake:
        client = served_app(tmp_path, fake, monkeypatch, timeout=1, model=model)
        response = client.post("/invocations", json=ROWS)
        assert response.status_code == status, response.text
        body = response.json()
        assert says in body["message"]
        assert "stack_trace" not in body and "Traceback" not in response.text
        assert KEY not in response.text
        assert client.get("/ping").status_code == 200


def test_a_bad_input_is_still_the_callers_400(tmp_path, monkeypatch):
    with FakeProvider() as fake:
        client = served_app(tmp_path, fake, monkeypatch)
        bad = {"dataframe_split": {"columns": ["text"], "data": [["   "]]}}
        response = client.post("/invocations", json=bad)
        assert response.status_code == 400 and "empty text" in response.json()["message"]
        assert fake.requests == 0
        ok = client.post("/invocations", json=ROWS)
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("model", ["openai/fake", "self-hosted/fake"])
def test_serve_lm_engine_answers_on_dspys_own_engine(tmp_path, monkeypatch, model):
    # The registered engine (LiteLLM, through DSPy), `serve`'s default (auto), then `serve lm_engine=lm15`
    for engine in (None, "auto", "lm15"):
        if engine:
            monkeypatch.setenv(LM_ENGINE_ENV, engine)
        with FakeProvider() as fake:
            client = served_app(tmp_path / str(engine), fake, monkeypatch, model=model)
            response = client.post("/invocations", json=ROWS)
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["label"] == TRAVEL_RULES["suitcase"]
            assert fake.requests == 1 and fake.auth == [f"Bearer {KEY}"]  # the configured key, from the environment
            # Which client sent it: lm15's own HTTP client, or LiteLLM's (the OpenAI SDK, DSPy's user agent).
            # DSPy's choice for an OpenAI-compatible chat call is its own client.
            assert fake.user_agents[0].startswith("lm15/") == (engine in ("auto", "lm15")), fake.user_agents
