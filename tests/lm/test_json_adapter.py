"""Our JSONAdapter sends the response format DSPy's would, building it once per signature and LM."""

from __future__ import annotations

import dspy
import pytest
from dspy.utils.callback import BaseCallback

from pipelines.lm.json_adapter import JSONAdapter
from tests.fakes import fake_lm

INTENT = dspy.Signature("text -> label, confidence: float")


def chosen(adapter, lm, signature=INTENT) -> dict:
    kwargs: dict = {}
    adapter._prepare_response_format(lm, kwargs, signature)
    return kwargs


@pytest.mark.parametrize("engine", ["lm15", "litellm"])
def test_a_schema_lm_gets_dspys_structured_format_built_once(engine):
    lm = dspy.LM("openai/gpt-4o-mini", engine=engine, api_key="unused")  # no call is made
    assert lm.supports_response_schema  # the case where DSPy builds a Pydantic model per call
    theirs = chosen(dspy.JSONAdapter(), lm)["response_format"]
    first = chosen(JSONAdapter(), lm)["response_format"]
    again = chosen(JSONAdapter(), lm)["response_format"]  # another adapter instance: the same entry
    assert first.model_json_schema() == theirs.model_json_schema()
    assert again is first  # kept, where DSPy's own builds a new class each time
    assert chosen(dspy.JSONAdapter(), lm)["response_format"] is not theirs


def test_a_json_mode_lm_gets_a_fresh_dict_each_call():
    lm = dspy.LM("openai/gpt-3.5-turbo", engine="lm15", api_key="unused")  # JSON mode, no schema
    theirs = chosen(dspy.JSONAdapter(), lm)
    first, again = chosen(JSONAdapter(), lm), chosen(JSONAdapter(), lm)
    assert first == again == theirs == {"response_format": {"type": "json_object"}}
    assert first["response_format"] is not again["response_format"]  # a caller may change its own copy


def test_the_choice_follows_the_signature_the_model_and_the_engine():
    schema_lm = dspy.LM("openai/gpt-4o-mini", engine="lm15", api_key="unused")
    other = dspy.Signature("question -> answer")
    assert list(chosen(JSONAdapter(), schema_lm, other)["response_format"].model_json_schema()["properties"]) == [
        "answer"
    ]
    assert set(chosen(JSONAdapter(), schema_lm)["response_format"].model_json_schema()["properties"]) == {
        "label",
        "confidence",
    }
    # A name DSPy's metadata does not know (a self-hosted server): no response_format, as DSPy decides.
    unknown = dspy.LM("openai/my-self-hosted-model", engine="lm15", api_key="unused")
    assert chosen(JSONAdapter(), unknown) == chosen(dspy.JSONAdapter(), unknown) == {}
    # The same model on two engines can differ: each engine keeps its own entry.
    for engine in ("lm15", "litellm"):
        lm = dspy.LM("anthropic/claude-3-haiku-20240307", engine=engine, api_key="unused")
        assert chosen(JSONAdapter(), lm) == chosen(dspy.JSONAdapter(), lm)


class _AdapterCalls(BaseCallback):
    def __init__(self):
        self.format = self.parse = 0

    def on_adapter_format_start(self, call_id, instance, inputs):
        self.format += 1

    def on_adapter_parse_start(self, call_id, instance, inputs):
        self.parse += 1


@pytest.mark.parametrize(("adapter", "formats", "parses"), [(JSONAdapter(), 1, 1), (dspy.JSONAdapter(), 2, 1)])
def test_one_call_formats_and_parses_once_for_callbacks_and_traces(adapter, formats, parses):
    # Every callback event is a span under MLflow's autolog, and a write to the store. DSPy's own JSONAdapter
    # reports its format twice (its subclassing wraps it twice); ours, which subclasses it, once.
    calls = _AdapterCalls()
    with dspy.context(lm=fake_lm(), adapter=adapter, callbacks=[calls]):
        assert dspy.Predict("text -> label")(text="my suitcase never arrived").label == "lost_luggage"
    assert (calls.format, calls.parse) == (formats, parses)
