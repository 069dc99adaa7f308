"""The shipped multi-stage programs, on a scripted LM: tools, stages, signatures built from a contract.

`DummyLM` answers each call with the next scripted dict (in JSON, as our adapter expects), so these
tests check our wiring (which stage sees which fields, what comes back), never a model's quality.
"""

from __future__ import annotations

import typing

import dspy
import pytest
from dspy.utils import DummyLM

from pipelines.data.contract import Contract, ContractError
from pipelines.lm.json_adapter import JSONAdapter
from pipelines.programs import DraftThenVerify, ExtractThenClassify, MathAgent, build_program
from pipelines.programs.math_agent import CompactReAct, calculator, convert_units

INTENTS = ["book_flight", "weather", "lost_luggage"]
GSM = Contract.from_config(
    {"question": {"type": "str"}}, {"answer": {"type": "str", "desc": "a number"}}, "Solve the problem."
)
TRAVEL = Contract.from_config(
    {"text": {"type": "str"}},
    {"intent": {"type": "label", "labels": INTENTS}, "city": {"type": "str", "desc": "the city, lower-case"}},
    "Give the intent and the city.",
)


def run(program, answers: list[dict], **inputs) -> tuple[dspy.Prediction, DummyLM]:
    lm = DummyLM(answers, adapter=JSONAdapter())
    with dspy.context(lm=lm, adapter=JSONAdapter()):
        return program(**inputs), lm


def fields(signature) -> tuple[list[str], list[str]]:
    return list(signature.input_fields), list(signature.output_fields)


# -- tools ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "expression, expected",
    [
        ("(48 + 48 / 2) * 2", "144"),
        ("7 / 2", "3.5"),
        ("2^10", "1024"),  # small models write ^ for powers
        ("$1,200 * 3", "3600"),
        ("sqrt(16) + abs(-2) + round(2.6)", "9"),
        ("-3 ** 2 % 5", "1"),
        ("12 * 4 =", "48"),
    ],
)
def test_calculator_does_arithmetic(expression, expected):
    assert calculator(expression) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('echo pwned')",
        "os.getcwd()",
        "().__class__.__bases__",
        "(1).real",
        "open('/etc/passwd')",
        "[x for x in range(3)]",
        "lambda: 1",
        "x + 1",
        "9 ** 9 ** 9",  # would hang: refused before it is computed
        "1" * 300,
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expression):
    assert calculator(expression).startswith("error:")


def test_calculator_reports_errors_as_text():
    # Tools answer with a message the agent can read, not an exception with a traceback.
    assert calculator("1 / 0") == "error: division by zero"
    assert calculator("2 +").startswith("error:")


@pytest.mark.parametrize(
    "args, expected",
    [
        ((90, "min", "h"), "1.5 h"),
        ((3, "hours", "minutes"), "180 minutes"),
        ((5, "miles", "km"), "8.04672 km"),
        ((12, "inches", "ft"), "1 ft"),
        ((2, "lb", "g"), "907.18474 g"),
        ((1, "gallon", "l"), "3.785411784 l"),
        ((2, "weeks", "days"), "14 days"),
    ],
)
def test_convert_units(args, expected):
    assert convert_units(*args) == expected


def test_convert_units_refuses_mixed_dimensions_and_unknown_units():
    assert convert_units(1, "km", "kg") == "error: cannot convert length (km) to mass (kg)"
    assert convert_units(1, "parsec", "m").startswith("error: unknown unit 'parsec'")
    assert convert_units(1, "ms", "m").startswith("error: unknown unit")  # not "m" + plural s


# -- MathAgent -----------------------------------------------------------------------------------
CONVERT = {"value": 2, "from_unit": "h", "to_unit": "min"}


def test_math_agent_calls_a_tool_then_answers():
    agent = MathAgent(GSM.to_dict(), max_iters=3)
    assert [name for name, _ in agent.named_predictors()] == ["agent.react", "agent.extract"]
    assert set(agent.agent.tools) == {"calculator", "convert_units", "finish"}
    script = [
        {"next_thought": "add them", "next_tool_name": "calculator", "next_tool_args": {"expression": "48 + 24"}},
        {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
        {"answer": "72"},
    ]
    prediction, lm = run(agent, script, question="48 clips in April, 24 in May. How many?")
    assert prediction.keys() == ["answer"] and prediction.answer == "72"
    # The final (extract) step saw the calculator's observation.
    assert "[[ ## observation_0 ## ]]\n72" in lm.history[-1]["messages"][-1]["content"]


def test_math_agent_stops_after_max_iters():
    agent = MathAgent(GSM.to_dict(), max_iters=2)
    steps = [
        {"next_thought": "first", "next_tool_name": "calculator", "next_tool_args": {"expression": "1 + 1"}},
        {"next_thought": "second", "next_tool_name": "convert_units", "next_tool_args": CONVERT},
    ]
    prediction, lm = run(agent, [*steps, {"answer": "2"}], question="1 + 1?")
    assert prediction.answer == "2" and len(lm.history) == 3


def test_math_agent_takes_a_repeated_call_as_finish():
    # A 0.5B model at temperature 0 repeats one call until max_iters: the repeat ends the loop instead.
    agent = MathAgent(GSM.to_dict(), max_iters=4)
    step = {"next_thought": "convert", "next_tool_name": "convert_units", "next_tool_args": CONVERT}
    result, lm = run(agent.agent, [step, step, {"answer": "120"}], question="How many minutes in 2 hours?")
    assert result.answer == "120" and len(lm.history) == 3  # two agent steps and the answer, not four steps
    assert result.trajectory["observation_0"] == "120 min" and result.trajectory["tool_name_2"] == "finish"
    assert CompactReAct.repeated({"tool_name_0": "calculator", "tool_args_0": {"expression": "1"}}) is False


def test_math_agent_asks_for_real_tool_arguments():
    # The step's schema spells out each tool's arguments, so a grammar-constrained model can only produce them.
    agent = MathAgent(GSM.to_dict())
    args = agent.agent.react.signature.output_fields["next_tool_args"].annotation
    members = {member.__name__: member.__annotations__ for member in typing.get_args(args)}
    assert members == {
        "calculator_args": {"expression": str},
        "convert_units_args": {"value": float, "from_unit": str, "to_unit": str},
        "finish_args": {},
    }
    instructions = agent.agent.react.signature.instructions
    assert instructions.startswith("Solve the problem.") and "- calculator(expression): Evaluate" in instructions
    assert list(agent.agent.extract.signature.output_fields) == ["answer"]  # no reasoning: it looped


# -- DraftThenVerify -----------------------------------------------------------------------------
def test_draft_then_verify_builds_both_stages_from_the_contract():
    program = DraftThenVerify(TRAVEL.to_dict())
    assert [name for name, _ in program.named_predictors()] == ["draft.predict", "verify"]
    draft, verify = program.draft.predict.signature, program.verify.signature
    assert fields(draft) == (["text"], ["reasoning", "draft"])
    assert fields(verify) == (["text", "draft"], ["intent", "city"])
    assert verify.output_fields["intent"].annotation == typing.Literal[tuple(INTENTS)]
    assert verify.output_fields["city"].annotation is str
    assert "Give the intent and the city." in draft.instructions and "draft answer" in verify.instructions


def test_draft_then_verify_renames_its_draft_field_when_the_task_uses_that_name():
    task = Contract.from_config({"draft": {"type": "str"}}, {"draft_2": {"type": "str"}, "edited": {"type": "str"}})
    program = DraftThenVerify(task, draft_reasoning=False)
    assert program.draft_field == "draft_3"
    assert fields(program.draft.signature) == (["draft"], ["draft_3"])
    assert fields(program.verify.signature) == (["draft", "draft_3"], ["draft_2", "edited"])


def test_draft_then_verify_returns_the_task_outputs():
    program = DraftThenVerify(GSM.to_dict())
    script = [{"reasoning": "4 pens at $3", "draft": "12"}, {"answer": "12"}]
    prediction, lm = run(program, script, question="A pen costs $3. How much do 4 pens cost?")
    assert prediction.keys() == ["answer"] and prediction.answer == "12"
    assert "[[ ## draft ## ]]\n12" in lm.history[-1]["messages"][-1]["content"]  # the verifier saw the draft


# -- ExtractThenClassify -------------------------------------------------------------------------
def test_extract_then_classify_builds_both_stages_from_the_contract():
    program = ExtractThenClassify(TRAVEL.to_dict())
    assert [name for name, _ in program.named_predictors()] == ["extract", "classify"]
    extract, classify = program.extract.signature, program.classify.signature
    assert fields(extract) == (["text"], ["city"])
    assert fields(classify) == (["text", "city"], ["intent"])
    assert extract.output_fields["city"].annotation is str
    assert classify.output_fields["intent"].annotation == typing.Literal[tuple(INTENTS)]


def test_extract_then_classify_returns_every_task_output_in_contract_order():
    program = ExtractThenClassify(TRAVEL)
    prediction, lm = run(program, [{"city": "lisbon"}, {"intent": "lost_luggage"}], text="bag lost in Lisbon")
    assert prediction.keys() == ["intent", "city"]
    assert (prediction.intent, prediction.city) == ("lost_luggage", "lisbon")
    assert "[[ ## city ## ]]\nlisbon" in lm.history[-1]["messages"][-1]["content"]  # the classifier saw the city


@pytest.mark.parametrize("contract", [GSM, Contract.from_config({"text": "str"}, {"intent": "label"})])
def test_extract_then_classify_needs_a_label_and_a_free_output(contract):
    with pytest.raises(ContractError, match="at least one `label` output and one other output") as caught:
        ExtractThenClassify(contract.to_dict())
    assert isinstance(caught.value, ValueError)


# -- the shipped configs -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "experiment, program_class, stages",
    [
        ("gsm8k_agent", MathAgent, ["agent.react", "agent.extract"]),
        ("gsm8k_draft_verify", DraftThenVerify, ["draft.predict", "verify"]),
        ("travel_requests", ExtractThenClassify, ["extract", "classify"]),
    ],
)
def test_presets_build_their_program_from_the_task_contract(make_cfg, experiment, program_class, stages):
    cfg = make_cfg("train", [f"experiment={experiment}"])
    contract = Contract.from_config(cfg.task.inputs, cfg.task.outputs, cfg.task.instructions)
    program, resolved = build_program(cfg.program, contract)
    assert isinstance(program, program_class)
    assert resolved["signature"] == contract.to_dict()
    assert [name for name, _ in program.named_predictors()] == stages
