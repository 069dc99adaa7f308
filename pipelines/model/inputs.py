"""A request's rows, checked against the task's contract before any LM call.

A refusal is an `MlflowException` with `INVALID_PARAMETER_VALUE`, which MLflow's scoring server answers
with HTTP 400 naming the row and column.

    >>> validate_rows(pd.DataFrame({"text": ["where is my bag"]}), contract.inputs)   # doctest: +SKIP
    [{'text': 'where is my bag'}]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.data.contract import Field


def bad_input(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    # INVALID_PARAMETER_VALUE is what MLflow's scoring server answers with HTTP 400.
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def check_value(field: Field, value, row: int):
    where = f"Row {row}, column {field.name!r}"
    if field.type in ("str", "label"):
        if not isinstance(value, str):
            raise bad_input(f"{where}: expected a string, got {type(value).__name__}")
        if not value.strip():
            raise bad_input(f"{where}: empty text")
        return value
    if field.type == "bool":
        if not isinstance(value, bool | np.bool_):
            raise bad_input(f"{where}: expected true or false, got {value!r}")
        return bool(value)
    numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)
    if not numeric or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        raise bad_input(f"{where}: expected a finite {field.type}, got {value!r}")
    if field.type == "int":
        if float(value) != int(value):
            raise bad_input(f"{where}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def validate_rows(frame: pd.DataFrame, inputs: list[Field]) -> list[dict]:
    """Rows as dicts, refusing what the program cannot answer: missing columns, wrong types, empty text."""
    names = [f.name for f in inputs]
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise bad_input(f"Missing input column(s) {missing}; the model expects {names}")
    if frame.empty:
        raise bad_input(f"No rows to score; send at least one row with columns {names}")
    columns = [frame[name].tolist() for name in names]  # column-wise: no per-row frame copy
    return [
        {f.name: check_value(f, value, i) for f, value in zip(inputs, values, strict=True)}
        for i, values in enumerate(zip(*columns, strict=True))
    ]


def output_value(value):
    """Outputs as plain JSON-able values (a Pydantic or custom object becomes its string form)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
