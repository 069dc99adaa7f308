"""A ReAct agent over the task's contract, with a safe calculator and a unit converter as tools.

The agent loops think -> call a tool -> read the result, up to `max_iters` steps, then a final
step extracts the task's outputs from the trajectory. Tools are plain functions: DSPy builds each
tool's schema from its name, docstring and type hints. `CompactReAct` is `dspy.ReAct` with the changes
the embedded 0.5B model needed to use tools at all (see its docstring).

    >>> calculator("(48 + 48 / 2) * 2")
    '144'
    >>> convert_units(90, "min", "h")
    '1.5 h'
    >>> agent = MathAgent(contract.to_dict(), max_iters=4)             # doctest: +SKIP
    >>> with dspy.context(lm=lm):                                      # doctest: +SKIP
    ...     agent(question="A trip is 90 minutes each way. How many hours are two trips?").answer
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
import typing
from collections.abc import Mapping

import dspy
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from pipelines.data.contract import Contract, as_contract

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt}
_MAX_CHARS = 200
_MAX_EXPONENT = 100  # 9**9**9 would hang the process: an arithmetic tool needs no huge powers


def _evaluate(node: ast.AST) -> float:
    # Walk the parsed tree and allow only numbers, arithmetic operators and a few named functions:
    # names, attributes, subscripts, lambdas, comprehensions etc. never reach Python's evaluator.
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > _MAX_EXPONENT or abs(left) > 1e6):
            raise ValueError("power too large")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and node.args
    ):
        return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))
    raise ValueError(f"not arithmetic: {ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__}")


def _format_number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression: numbers, + - * / // % ** ( ), sqrt, abs, round, min, max."""
    text = str(expression).strip().rstrip("=").replace("^", "**").replace("×", "*").replace("÷", "/")
    # Small models write "$1,200": drop currency signs and thousands separators, not decimal points.
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.replace("$", ""))
    if len(text) > _MAX_CHARS:
        return f"error: expression longer than {_MAX_CHARS} characters"
    try:
        return _format_number(_evaluate(ast.parse(text, mode="eval")))
    except ZeroDivisionError:
        return "error: division by zero"
    except (SyntaxError, ValueError, TypeError, OverflowError) as exc:
        return f"error: {exc}"


# Factors to one base unit per dimension (m, kg, s, l); the aliases are what people and models write.
_UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 0.001),
    "cm": ("length", 0.01),
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "in": ("length", 0.0254),
    "ft": ("length", 0.3048),
    "yd": ("length", 0.9144),
    "mi": ("length", 1609.344),
    "mg": ("mass", 1e-6),
    "g": ("mass", 0.001),
    "kg": ("mass", 1.0),
    "t": ("mass", 1000.0),
    "oz": ("mass", 0.028349523125),
    "lb": ("mass", 0.45359237),
    "s": ("time", 1.0),
    "min": ("time", 60.0),
    "h": ("time", 3600.0),
    "day": ("time", 86400.0),
    "week": ("time", 604800.0),
    "ml": ("volume", 0.001),
    "l": ("volume", 1.0),
    "cup": ("volume", 0.2365882365),
    "pt": ("volume", 0.473176473),
    "qt": ("volume", 0.946352946),
    "gal": ("volume", 3.785411784),
}
# Other spellings, singular: a plural ("miles", "inches") is tried without its "s"/"es" (words only, so
# "ms" never becomes metres).
_NAMES = {
    "mm": "millimeter millimetre", "cm": "centimeter centimetre", "m": "meter metre", "km": "kilometer kilometre kms",
    "in": "inch", "ft": "foot feet", "yd": "yard yds", "mi": "mile", "mg": "milligram", "g": "gram",
    "kg": "kilogram kilo kgs", "t": "tonne ton", "oz": "ounce", "lb": "pound lbs", "s": "sec second secs",
    "min": "minute mins", "h": "hr hour hrs", "day": "d", "week": "wk", "ml": "milliliter millilitre",
    "l": "liter litre", "cup": "", "pt": "pint", "qt": "quart", "gal": "gallon gals",
}  # fmt: skip
_ALIASES = {alias: unit for unit, names in _NAMES.items() for alias in names.split()}


def _unit(name: str) -> str:
    key = str(name).strip().lower().rstrip(".")
    candidates = [key, key.removesuffix("es"), key.removesuffix("s")] if len(key) > 3 else [key]
    for candidate in candidates:
        if candidate in _UNITS:
            return candidate
        if candidate in _ALIASES:
            return _ALIASES[candidate]
    raise ValueError(f"unknown unit {name!r}; known units: {', '.join(_UNITS)}")


def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a value between units of length (m km mi ft in), mass (kg g lb oz), time (h min day), volume (l ml)."""
    try:
        (dim_from, factor_from), (dim_to, factor_to) = _UNITS[_unit(from_unit)], _UNITS[_unit(to_unit)]
        if dim_from != dim_to:
            return f"error: cannot convert {dim_from} ({from_unit}) to {dim_to} ({to_unit})"
        return f"{_format_number(float(value) * factor_from / factor_to)} {str(to_unit).strip()}"
    except (ValueError, TypeError) as exc:
        return f"error: {exc}"


TOOLS = [calculator, convert_units]
AGENT_INSTRUCTIONS = """Work in steps. Each step calls one tool; its result is added to the trajectory.
Call finish as soon as the trajectory holds the answer.
Tools:
{tools}"""
THOUGHT_DESC = "the next calculation, written with the numbers from the question"
ARGS_DESC = "the tool's arguments as JSON"


def tool_args_type(tools: Mapping[str, dspy.Tool]) -> typing.Any:
    """One TypedDict per tool's arguments, as a Union: what `next_tool_args` may hold.

    ReAct types the field `dict[str, Any]`, an open mapping, so JSONAdapter can only ask for "some JSON
    object" and the engine's grammar cannot hold the model to a tool's real arguments. The Union gives a
    full schema (pydantic still hands ReAct a plain dict).
    """
    members = [
        TypedDict(f"{name}_args", {arg: tool.arg_types.get(arg, typing.Any) for arg in tool.args})
        for name, tool in tools.items()
    ]
    return functools.reduce(operator.or_, members)


class CompactReAct(dspy.ReAct):
    """`dspy.ReAct` tuned for a small model behind a JSON grammar (what the embedded 0.5B model needed).

    Seen on GSM8K with the stock ReAct: the model copied the ~750-token prompt's argument *schemas*
    as its arguments (`{"expression": {"type": "string"}}`), named tools the prompt did not offer (an
    unparseable step ends the example), repeated one identical call until `max_iters`, and its final
    ChainOfThought restated the question until `max_tokens` ran out. Hence: a short prompt with one
    argument example, tool arguments typed per tool (so the grammar admits only real arguments), a
    repeated call taken as `finish`, and a plain Predict for the final answer.
    """

    def __init__(self, signature, tools, max_iters: int = 4):
        super().__init__(signature, tools=tools, max_iters=max_iters)
        listed = [f"- {name}({', '.join(tool.args)}): {tool.desc}" for name, tool in self.tools.items()]
        listed[-1] = "- finish(): the answer is in the trajectory."  # ReAct adds `finish` last
        instructions = f"{self.signature.instructions}\n" + AGENT_INSTRUCTIONS.format(tools="\n".join(listed))
        self.react.signature = (
            self.react.signature.with_instructions(instructions.strip())
            .with_updated_fields("next_thought", desc=THOUGHT_DESC)
            .with_updated_fields("next_tool_args", desc=ARGS_DESC, type_=tool_args_type(self.tools))
        )
        self.extract = dspy.Predict(self.extract.predict.signature.delete("reasoning"))

    @staticmethod
    def repeated(trajectory: Mapping) -> bool:
        """Whether the last two tool calls were the same tool with the same arguments."""
        steps = sorted(int(key.rsplit("_", 1)[1]) for key in trajectory if key.startswith("tool_name_"))

        def call(i: int) -> tuple:
            return trajectory[f"tool_name_{i}"], trajectory[f"tool_args_{i}"]

        return len(steps) >= 2 and call(steps[-1]) == call(steps[-2])

    # ReAct asks for every step through this hook; answering a repeat with `finish` ends its loop there.
    def _call_with_potential_trajectory_truncation(self, module, trajectory, **input_args):
        if module is self.react and self.repeated(trajectory):
            return dspy.Prediction(next_thought="Repeated the last step.", next_tool_name="finish", next_tool_args={})
        return super()._call_with_potential_trajectory_truncation(module, trajectory, **input_args)

    async def _async_call_with_potential_trajectory_truncation(self, module, trajectory, **input_args):
        if module is self.react and self.repeated(trajectory):
            return dspy.Prediction(next_thought="Repeated the last step.", next_tool_name="finish", next_tool_args={})
        return await super()._async_call_with_potential_trajectory_truncation(module, trajectory, **input_args)


class MathAgent(dspy.Module):
    """A ReAct agent (`CompactReAct`) over the task's signature with `calculator` and `convert_units` as tools.

    `instructions` replaces the task's instructions (None: keep them). The agent's outputs are the
    task's outputs; its trajectory (thoughts, tool calls, observations) is in the MLflow trace.
    """

    def __init__(self, signature: Contract | Mapping, max_iters: int = 4, instructions: str | None = None):
        super().__init__()
        contract = as_contract(signature)
        self.output_names = contract.output_names
        # A small max_iters: every step re-reads the whole trajectory (tokens grow quadratically), and a
        # 0.5B model that has not found the answer in a few calls rarely does later.
        self.agent = CompactReAct(contract.signature(instructions), tools=TOOLS, max_iters=max_iters)

    def forward(self, **inputs) -> dspy.Prediction:
        result = self.agent(**inputs)
        return dspy.Prediction(**{name: result[name] for name in self.output_names})
