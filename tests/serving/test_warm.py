"""A served model is warm when it is loaded: the embedded model's llama.cpp context exists before the first
request (the scoring server loads the model before `/ping` answers), so the first client pays no load."""

from __future__ import annotations

import mlflow

from pipelines.data.contract import Contract
from tests.helpers import smollm2_path
from tests.serving.models import PREDICT, log_served_model

CONTRACT = Contract.from_config(
    inputs={"text": {"type": "str"}}, outputs={"label": {"type": "label", "labels": ["a", "b"]}}
)


def test_loading_the_model_loads_the_embedded_lm(tmp_path):
    lm = {
        "_target_": "pipelines.lm.local_lm",
        "model_path": smollm2_path(),
        "model": "smollm2-warm-test",
        "n_ctx": 512,
        "max_tokens": 8,
    }
    served = log_served_model(tmp_path, CONTRACT, PREDICT, lm)
    model = mlflow.pyfunc.load_model(served.uri).unwrap_python_model()
    engine = model.lm.provider.engine
    assert engine.loaded(model.lm.model)  # before any predict
    engine.unload(model.lm.model)
    assert not engine.loaded(model.lm.model)
