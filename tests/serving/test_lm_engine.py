"""`serve lm_engine=`: a served provider LM on the engine asked for (DSPy's own choice by default); a bad name, or
naming an engine for the embedded LM, is refused; `auto` leaves the embedded LM as it is."""

from __future__ import annotations

import pytest

from pipelines.model.limits import ServingLimits
from pipelines.model.lm_engine import ENV, served_lm_config
from pipelines.serve import serve_environment

PROVIDER = {"_target_": "pipelines.lm.provider_lm", "model": "openai/gpt-4o-mini", "engine": "litellm"}


def test_serve_passes_the_engine_to_the_server_and_names_the_options_for_a_bad_one(make_cfg):
    assert serve_environment(make_cfg("serve", ["lm_engine=lm15"]))[ENV] == "lm15"
    assert ENV not in serve_environment(make_cfg("serve", []))  # by default the model's own: auto, DSPy picks
    assert ServingLimits().lm_engine == "auto"
    assert serve_environment(make_cfg("serve", ["lm_engine=none"]))[ENV] == "none"  # none: the registered engine
    assert ServingLimits().with_environment({ENV: "none"}).lm_engine is None
    with pytest.raises(ValueError, match=r"lm_engine must be one of \['auto', 'litellm', 'lm15'\]"):
        serve_environment(make_cfg("serve", ["lm_engine=httpx"]))


def test_the_model_loads_its_lm_on_the_engine_asked_for():
    assert served_lm_config(PROVIDER, {ENV: "lm15"}) == PROVIDER | {"engine": "lm15"}
    assert served_lm_config(PROVIDER, {ENV: "auto"}) == PROVIDER | {"engine": "auto"}
    assert served_lm_config(PROVIDER, {}) is PROVIDER  # outside a server: as registered
    assert served_lm_config(PROVIDER, {ENV: "none"}) is PROVIDER


def test_an_embedded_lm_has_no_engine_to_choose():
    local = {"_target_": "pipelines.lm.local_lm", "model": "qwen2.5-coder-0.5b-instruct"}
    assert served_lm_config(local, {ENV: "auto"}) is local  # serve's default: the embedded model as it is
    for engine in ("lm15", "litellm"):
        with pytest.raises(ValueError, match="applies to a provider LM"):
            served_lm_config(local, {ENV: engine})
