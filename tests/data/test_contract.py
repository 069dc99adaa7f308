"""pipelines.data.contract: a task's typed fields, their errors, and what they become (DSPy, MLflow, JSON)."""

from __future__ import annotations

import json
from typing import Literal

import pytest

from pipelines.data.contract import Contract, ContractError, Field, as_contract

ROUTE = {
    "inputs": {"ticket": {"type": "str", "desc": "the customer's ticket"}, "tier": {"type": "label"}},
    "outputs": {"team": {"type": "label", "labels": ["billing", "tech"]}, "urgent": "bool"},
    "instructions": "Route the ticket.",
}


def route() -> Contract:
    return Contract.from_config(ROUTE["inputs"], ROUTE["outputs"], ROUTE["instructions"])


# -- parsing --------------------------------------------------------------------------------------


def test_from_config_reads_names_types_descriptions_and_labels():
    c = route()
    assert c.input_names == ["ticket", "tier"] and c.output_names == ["team", "urgent"]
    assert c.field("ticket") == Field("ticket", "str", "the customer's ticket", None)
    assert c.field("team").labels == ("billing", "tech")
    assert c.field("urgent") == Field("urgent", "bool")  # the string shorthand is a type
    assert c.label_fields == ["team", "tier"]  # outputs first: the first one stratifies the splits
    assert c.instructions == "Route the ticket."


def test_type_defaults_to_str_and_instructions_to_empty():
    c = Contract.from_config({"q": {}}, {"a": None}, None)
    assert [f.type for f in [*c.inputs, *c.outputs]] == ["str", "str"]
    assert c.instructions == "" and c.label_fields == []


@pytest.mark.parametrize("spec", [{"type": "text"}, "string"])
def test_unknown_type_names_the_field_and_the_options(spec):
    with pytest.raises(ContractError) as info:
        Contract.from_config({"q": spec}, {"a": "str"})
    message = str(info.value)
    assert "'q'" in message and repr(spec if isinstance(spec, str) else spec["type"]) in message
    for option in ("str", "int", "float", "bool", "label"):
        assert f"'{option}'" in message


def test_field_validates_its_type_directly():
    with pytest.raises(ContractError, match="unknown type 'list'"):
        Field("x", "list")


def test_unknown_keys_are_named():
    with pytest.raises(ContractError) as info:
        Contract.from_config({"q": {"type": "str", "descr": "typo", "choices": []}}, {"a": "str"})
    message = str(info.value)
    assert "task.inputs.q" in message and "['choices', 'descr']" in message
    assert "type, desc, labels" in message


def test_a_field_cannot_be_both_input_and_output():
    with pytest.raises(ContractError, match=r"\['text'\] are both inputs and outputs"):
        Contract.from_config({"text": "str", "q": "str"}, {"text": "str"})


@pytest.mark.parametrize("outputs", [None, {}])
def test_a_task_needs_outputs(outputs):
    with pytest.raises(ContractError, match="at least one outputs field"):
        Contract.from_config({"q": "str"}, outputs)


def test_a_task_needs_inputs():
    with pytest.raises(ContractError, match="at least one inputs field"):
        Contract.from_config({}, {"a": "str"})


def test_contract_error_is_a_value_error_and_unknown_field_lists_the_fields():
    with pytest.raises(ValueError, match=r"no field 'city'.*\['ticket', 'tier', 'team', 'urgent'\]"):
        route().field("city")


# -- label sets -----------------------------------------------------------------------------------


def test_with_labels_fills_only_undeclared_label_fields():
    c = route().with_labels({"tier": ["free", "pro"], "team": ["sales"], "ticket": ["x"], "other": ["y"]})
    assert c.field("tier").labels == ("free", "pro")  # filled from the data
    assert c.field("team").labels == ("billing", "tech")  # declared labels win
    assert c.field("ticket").labels is None  # not a label field
    assert c.output_names == ["team", "urgent"] and c.instructions == "Route the ticket."
    assert route().field("tier").labels is None  # a new contract; the original is unchanged


def test_with_labels_leaves_a_field_without_data_labels_open():
    c = route().with_labels({"tier": []})
    assert c.field("tier").labels is None
    assert c.field("tier").annotation() is str


# -- DSPy signature -------------------------------------------------------------------------------


def test_signature_fields_types_and_literals():
    sig = route().with_labels({"tier": ["free", "pro"]}).signature()
    assert list(sig.input_fields) == ["ticket", "tier"]
    assert list(sig.output_fields) == ["team", "urgent"]
    assert sig.input_fields["ticket"].annotation is str
    assert sig.input_fields["tier"].annotation == Literal["free", "pro"]
    assert sig.output_fields["team"].annotation == Literal["billing", "tech"]
    assert sig.output_fields["urgent"].annotation is bool
    assert sig.instructions == "Route the ticket."
    assert sig.input_fields["ticket"].json_schema_extra["desc"] == "the customer's ticket"
    assert sig.output_fields["team"].json_schema_extra["desc"] == "exactly one of the allowed labels"


def test_signature_numeric_types_and_instruction_override():
    c = Contract.from_config({"n": "int", "x": "float"}, {"total": {"type": "float", "desc": "the sum"}})
    sig = c.signature("Add them up.")
    assert sig.input_fields["n"].annotation is int and sig.input_fields["x"].annotation is float
    assert sig.output_fields["total"].annotation is float
    assert sig.output_fields["total"].json_schema_extra["desc"] == "the sum"
    assert sig.instructions == "Add them up."


def test_an_open_label_field_is_a_plain_string():
    sig = route().signature()  # tier has no labels yet
    assert sig.input_fields["tier"].annotation is str


# -- MLflow signature -----------------------------------------------------------------------------


def test_mlflow_signature_column_types():
    c = Contract.from_config(
        {"text": "str", "n": "int", "x": "float", "flag": "bool", "tier": "label"},
        {"label": {"type": "label", "labels": ["a", "b"]}, "score": "float", "count": "int", "ok": "bool"},
    )
    sig = c.mlflow_signature()
    inputs = {col["name"]: col["type"] for col in json.loads(sig.to_dict()["inputs"])}
    outputs = {col["name"]: col["type"] for col in json.loads(sig.to_dict()["outputs"])}
    assert inputs == {"text": "string", "n": "long", "x": "double", "flag": "boolean", "tier": "string"}
    assert outputs == {"label": "string", "score": "double", "count": "long", "ok": "boolean"}
    assert sig.inputs.input_names() == ["text", "n", "x", "flag", "tier"]
    assert sig.outputs.input_names() == ["label", "score", "count", "ok"]


# -- dict form ------------------------------------------------------------------------------------


def test_dict_round_trip():
    c = route().with_labels({"tier": ["free", "pro"]})
    d = c.to_dict()
    assert d == {
        "instructions": "Route the ticket.",
        "inputs": {
            "ticket": {"type": "str", "desc": "the customer's ticket"},
            "tier": {"type": "label", "labels": ["free", "pro"]},
        },
        "outputs": {"team": {"type": "label", "labels": ["billing", "tech"]}, "urgent": {"type": "bool"}},
    }
    assert json.loads(json.dumps(d)) == d  # JSON-safe: what spec.json holds
    assert Contract.from_dict(d) == c
    assert Contract.from_dict(json.loads(json.dumps(d))) == c


def test_from_dict_without_instructions():
    c = Contract.from_dict({"inputs": {"q": "str"}, "outputs": {"a": "int"}})
    assert c.instructions == "" and c.field("a").type == "int"


def test_as_contract_accepts_a_contract_or_its_dict():
    c = route()
    assert as_contract(c) is c
    assert as_contract(c.to_dict()) == c
    with pytest.raises(ContractError):
        as_contract({"inputs": {"q": "str"}, "outputs": {}})
