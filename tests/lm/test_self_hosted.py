"""`lm.self_hosted`: your own OpenAI-compatible server, declared to DSPy as a provider of its own.
Real `dspy.LM` calls to the fake OpenAI server on loopback."""

from __future__ import annotations

import pytest

from benchmarks.fake_provider import FakeProvider
from pipelines.lm import provider_lm
from pipelines.lm.usage import count_requests

QUESTION = "I want a refund"
ANSWER = ['{"label": "refund_request"}']  # what the fake answers it (tests.fakes.TRAVEL_RULES)


@pytest.mark.parametrize("engine", ["litellm", "auto", "lm15"])
def test_every_engine_reaches_the_declared_server_with_its_key(monkeypatch, engine):
    monkeypatch.setenv("BOX_KEY", "box-key-123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-this-server")
    with FakeProvider() as fake:
        lm = provider_lm(
            "gpu-box/served-model",
            api_base=fake.url,
            api_key_env="BOX_KEY",
            self_hosted=True,
            engine=engine,
            cache=False,
        )
        with count_requests() as sent:
            assert lm(QUESTION) == ANSWER
    assert fake.requests == 1 and fake.auth == ["Bearer box-key-123"]
    # Which client sent it: LiteLLM's generic OpenAI door, or DSPy's own (lm15) for auto and lm15.
    assert fake.user_agents[0].startswith("lm15/") == (engine != "litellm"), fake.user_agents
    # Budgets count what every engine sends, LiteLLM's and DSPy's own client alike.
    assert sent.count == 1


def test_a_self_hosted_model_is_never_priced_as_a_providers():
    # The same served name: under `openai/` DSPy prices it at OpenAI's rates; on your own box, at nothing.
    with FakeProvider() as fake:
        hosted = provider_lm("openai/gpt-4o-mini", api_base=fake.url, require_key=False, engine="lm15", cache=False)
        own = provider_lm(
            "self-hosted/gpt-4o-mini",
            api_base=fake.url,
            require_key=False,
            self_hosted=True,
            engine="lm15",
            cache=False,
        )
        hosted(QUESTION), own(QUESTION)
    assert hosted.history[-1]["cost"] > 0
    assert own.history[-1]["cost"] is None


def test_two_servers_under_one_prefix_each_get_their_own_requests():
    with FakeProvider() as first, FakeProvider() as second:
        a = provider_lm("box/m", api_base=first.url, require_key=False, self_hosted=True, engine="auto", cache=False)
        b = provider_lm("box/m", api_base=second.url, require_key=False, self_hosted=True, engine="auto", cache=False)
        a(QUESTION), b(QUESTION), a(QUESTION)
    assert (first.requests, second.requests) == (2, 1)


@pytest.mark.parametrize(
    ("model", "api_base", "says"),
    [
        ("openai/served-model", "http://127.0.0.1:1/v1", r"cannot declare 'openai'.*lm.model=self-hosted/served-model"),
        ("served-model", "http://127.0.0.1:1/v1", r"<server>/<served name>"),
        ("self-hosted/served-model", None, r"needs lm.api_base"),
    ],
)
def test_a_bad_declaration_is_refused_before_any_call(model, api_base, says):
    with pytest.raises(ValueError, match=says):
        provider_lm(model, api_base=api_base, require_key=False, self_hosted=True)
