"""No API key leaves the environment: not in params, tags, artifacts, traces, models or the registry.

A fake OpenAI-compatible server on loopback stands in for a provider; sentinel keys sit in the
environment; after train, evaluate and register have run (and the model has been loaded back),
no file of the tracking store, its artifacts or the DSPy cache contains a sentinel.
"""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from benchmarks.fake_provider import FakeProvider
from pipelines.evaluate import evaluate
from pipelines.register import register
from pipelines.train import train
from tests.helpers import files_containing

SENTINEL = "sk-SENTINEL-7f3a9c1e5b2d4a6f"
OTHER_SENTINEL = "sk-OTHER-SENTINEL-0b1c2d3e"


@pytest.fixture
def fake_provider():
    with FakeProvider() as fake:
        yield fake


def test_keys_never_reach_the_store(make_cfg, monkeypatch, tmp_path, fake_provider):
    monkeypatch.setenv("MY_PROVIDER_KEY", SENTINEL)
    monkeypatch.setenv("OPENAI_API_KEY", OTHER_SENTINEL)
    overrides = [
        "lm=openai_compatible",
        f"lm.api_base={fake_provider.url}",
        "lm.model=self-hosted/fake-model",
        "lm.api_key_env=MY_PROVIDER_KEY",
        "lm.require_key=true",
    ]
    trained = train(make_cfg("main", [*overrides, "optimizer=bootstrap"], fake=False))
    evaluate(make_cfg("evaluate", overrides, fake=False), model_uri=trained.model_uri)
    first = register(make_cfg("register", overrides, fake=False), run_id=trained.run_id)
    # A challenger on other dev rows: register loads both models (each builds its LM, key from the
    # environment) and scores the champion on those rows, with traces, now.
    small = [*overrides, "task.data.dev_size=8"]
    challenger = train(make_cfg("main", [*small, "optimizer=none"], fake=False))
    calls_before = len(fake_provider.auth)
    second = register(make_cfg("register", small, fake=False), run_id=challenger.run_id)
    assert second.champion_score is not None and second.version != first.version
    assert "eval/champion_dev_predictions.json" in {
        a.path for a in MlflowClient().list_artifacts(second.run_id, "eval")
    }
    # models:/NAME@champion on rows no run has asked about (DSPy's cache holds the others' answers).
    champion = evaluate(make_cfg("evaluate", overrides, fake=False), split="val")
    assert champion.outcome.score > 0
    assert len(fake_provider.auth) > calls_before  # the loaded model called the provider itself
    # The model reads its key from the serving environment when it loads, and answers. It stores the
    # NAME of the variable, never its value.
    model = mlflow.pyfunc.load_model(trained.model_uri)
    out = model.predict(pd.DataFrame({"text": ["I want a refund"]}))
    assert out["label"].tolist() == ["refund_request"]
    lm_spec = model.unwrap_python_model().spec["lm"]
    assert lm_spec["api_key_env"] == "MY_PROVIDER_KEY" and "api_key" not in lm_spec

    # The key was really used (so the check below is not vacuous)...
    assert f"Bearer {SENTINEL}" in fake_provider.auth
    assert all(auth == f"Bearer {SENTINEL}" for auth in fake_provider.auth)
    # ...and is nowhere on disk: sqlite store (params, tags, traces, registry), artifacts, DSPy cache,
    # Hydra outputs.
    assert any(tmp_path.rglob("*.db")), "the tracking store should exist"
    assert any((tmp_path / "dspy_cache").rglob("*")), "the DSPy cache should hold the provider's answers"
    for needle in (SENTINEL, OTHER_SENTINEL):
        assert files_containing(tmp_path, needle) == []


def test_keyless_server_never_receives_the_openai_key(make_cfg, monkeypatch, fake_provider):
    """A self-hosted server with no key configured gets a placeholder, not OPENAI_API_KEY from the environment."""
    monkeypatch.setenv("OPENAI_API_KEY", OTHER_SENTINEL)
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)
    cfg = make_cfg(
        "train",
        [
            "lm=openai_compatible",
            f"lm.api_base={fake_provider.url}",
            "lm.model=self-hosted/fake-model",
            "optimizer=none",
            "task.data.dev_size=4",
        ],
        fake=False,
    )
    train(cfg)
    assert fake_provider.auth and all(OTHER_SENTINEL not in auth for auth in fake_provider.auth)
