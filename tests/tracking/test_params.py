"""Params are the few knobs runs are compared by; the whole resolved config is the `config.yaml` artifact."""

from __future__ import annotations

from pipelines.config import to_container
from pipelines.tracking.run_params import headline_params


def test_an_optimising_run_logs_its_optimizer_settings_and_no_paths(make_cfg):
    cfg = make_cfg("optimize", ["optimizer=miprov2"], fake=False)
    params = headline_params(to_container(cfg), "optimize")
    assert params["task.name"] == "travel_intents" and params["lm.model"] == "qwen2.5-coder-0.5b-instruct"
    assert params["optimizer.name"] == "miprov2" and params["optimizer.compiler.auto"] == "light"
    assert params["optimizer.compile_args.minibatch_size"] == "25"
    assert params["task.data.dev_size"] == "16" and params["seed"] == "0"
    assert not any(
        k.startswith(("paths.", "tracking.", "hydra.")) or k.endswith("_target_")
        for k in params
        if k != "program._target_"
    )
    assert not any("metric" in k for k in params)
    assert len(params) <= 30


def test_evaluate_and_register_runs_log_no_optimizer_params(make_cfg):
    for entry in ("evaluate", "register"):
        params = headline_params(to_container(make_cfg(entry, fake=False)), entry)
        assert not any(k.startswith("optimizer.") for k in params), entry
        assert params["eval.split"] and params["task.name"] == "travel_intents"
