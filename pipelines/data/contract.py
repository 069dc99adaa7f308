"""A task's contract: the fields a program reads and writes, with their types.

Everything downstream (data mapping, the evaluation table, the gate, the model signature, serving,
judges, GEPA's feedback) reads field names from here; nothing below the task config assumes one.

    >>> contract = Contract.from_config(
    ...     inputs={"ticket": {"type": "str"}, "tier": {"type": "label", "labels": ["free", "pro"]}},
    ...     outputs={"team": {"type": "label"}},
    ...     instructions="Route the ticket.")
    >>> contract.input_names, contract.output_names
    (['ticket', 'tier'], ['team'])

Types: `str`, `int`, `float`, `bool`, and `label`: a string restricted to a label set (the task's
`labels`, or every value the data holds), typed `Literal[...]` so DSPy's JSON adapter sends an enum and
the embedded model's grammar can only produce a valid label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

PYTHON_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "label": str}
MLFLOW_TYPES = {"str": "string", "int": "long", "float": "double", "bool": "boolean", "label": "string"}


class ContractError(ValueError):
    """A task's field declarations are wrong; the message names the field and the options."""


@dataclass(frozen=True)
class Field:
    """One input or output field: its name, type (`str`, `int`, `float`, `bool`, `label`), description and,
    for a label, its label set."""

    name: str
    type: str = "str"
    desc: str | None = None
    labels: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.type not in PYTHON_TYPES:
            raise ContractError(f"field {self.name!r}: unknown type {self.type!r}; choose one of {list(PYTHON_TYPES)}")

    def annotation(self) -> Any:
        if self.type == "label" and self.labels:
            return Literal[tuple(self.labels)]  # type: ignore[valid-type]
        return PYTHON_TYPES[self.type]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.desc:
            out["desc"] = self.desc
        if self.labels is not None:
            out["labels"] = list(self.labels)
        return out


def _fields(spec: Mapping[str, Any] | None, role: str) -> list[Field]:
    if not spec:
        raise ContractError(f"a task needs at least one {role} field (task.{role}: {{name: {{type: str}}}})")
    out = []
    for name, value in spec.items():
        value = {"type": value} if isinstance(value, str) else dict(value or {})
        unknown = set(value) - {"type", "desc", "labels"}
        if unknown:
            raise ContractError(f"task.{role}.{name}: unknown key(s) {sorted(unknown)}; use type, desc, labels")
        labels = value.get("labels")
        out.append(Field(str(name), value.get("type", "str"), value.get("desc"), tuple(labels) if labels else None))
    return out


@dataclass(frozen=True)
class Contract:
    """A task's input and output fields and its instructions; build it with `from_config` from a task YAML's
    `inputs`, `outputs` and `instructions`."""

    inputs: list[Field]
    outputs: list[Field]
    instructions: str = ""

    @classmethod
    def from_config(cls, inputs: Mapping, outputs: Mapping, instructions: str = "") -> Contract:
        ins, outs = _fields(inputs, "inputs"), _fields(outputs, "outputs")
        clash = {f.name for f in ins} & {f.name for f in outs}
        if clash:
            raise ContractError(f"field(s) {sorted(clash)} are both inputs and outputs")
        return cls(ins, outs, instructions or "")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Contract:
        return cls.from_config(d["inputs"], d["outputs"], d.get("instructions", ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "instructions": self.instructions,
            "inputs": {f.name: f.to_dict() for f in self.inputs},
            "outputs": {f.name: f.to_dict() for f in self.outputs},
        }

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [f.name for f in self.outputs]

    @property
    def label_fields(self) -> list[str]:
        """Fields of type `label`, outputs first (the first one stratifies the splits): their label sets come
        from the data when not given."""
        return [f.name for f in [*self.outputs, *self.inputs] if f.type == "label"]

    def field(self, name: str) -> Field:
        for f in [*self.inputs, *self.outputs]:
            if f.name == name:
                return f
        raise ContractError(f"no field {name!r}; the task's fields are {self.input_names + self.output_names}")

    def with_labels(self, labels: Mapping[str, list[str]]) -> Contract:
        """Fill in label sets found in the data (declared ones win)."""

        def fill(f: Field) -> Field:
            if f.type == "label" and f.labels is None and labels.get(f.name):
                return replace(f, labels=tuple(labels[f.name]))
            return f

        return Contract([fill(f) for f in self.inputs], [fill(f) for f in self.outputs], self.instructions)

    def signature(self, instructions: str | None = None):
        """The one-step `dspy.Signature` inputs -> outputs (what a single-predictor program uses)."""
        import dspy

        fields = {}
        for f in self.inputs:
            fields[f.name] = (f.annotation(), dspy.InputField(**({"desc": f.desc} if f.desc else {})))
        for f in self.outputs:
            desc = f.desc or ("exactly one of the allowed labels" if f.type == "label" else None)
            fields[f.name] = (f.annotation(), dspy.OutputField(**({"desc": desc} if desc else {})))
        return dspy.Signature(fields, instructions if instructions is not None else self.instructions)

    def mlflow_signature(self):
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        return ModelSignature(
            inputs=Schema([ColSpec(MLFLOW_TYPES[f.type], f.name) for f in self.inputs]),
            outputs=Schema([ColSpec(MLFLOW_TYPES[f.type], f.name) for f in self.outputs]),
        )


def as_contract(value: Contract | Mapping[str, Any]) -> Contract:
    """A program's `signature` argument: a Contract, or its dict form (what spec.json and Hydra hold)."""
    return value if isinstance(value, Contract) else Contract.from_dict(value)
