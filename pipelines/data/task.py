"""A task: its contract, its data split by role, and its metric, built once from the task config.

    >>> task = Task.from_config(cfg.task)                                  # doctest: +SKIP
    >>> task.contract.output_names, len(task.examples("dev"))              # doctest: +SKIP
    (['label'], 60)

The data loader (`task.data._target_`, `load_splits` by default, or any callable of yours returning
`Splits`) is called with the contract's `inputs`, `outputs` and `label_fields`; label sets found in
the data are filled into the contract, so a `label` output becomes a Literal over exactly those.
Fields typed `int` or `float` are converted to that type (a number derived from text, GSM8K's `answer`,
becomes one), so demos show numbers where the model must write numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dspy
import pandas as pd

from pipelines.data.contract import PYTHON_TYPES, Contract
from pipelines.data.splits import DataError, Splits


def named(metric: Callable) -> Callable:
    """A `_partial_` metric with its function's `__name__`: MLflow names trace assessments after it."""
    if isinstance(metric, functools.partial):
        return functools.update_wrapper(metric, metric.func)
    return metric


def _convert_numbers(splits: Splits, contract: Contract) -> None:
    """The splits' `int` / `float` fields as numbers of that type (what the contract, and the grammar, ask for)."""
    for f in [*contract.inputs, *contract.outputs]:
        if f.type not in ("int", "float"):
            continue
        for split, frame in splits.frames.items():
            if f.name not in frame or frame[f.name].dtype.kind == {"int": "i", "float": "f"}[f.type]:
                continue
            try:
                numbers = pd.to_numeric(frame[f.name])
            except (TypeError, ValueError) as exc:
                raise DataError(f"{splits.source}: field {f.name!r} ({split}) is not all {f.type}: {exc}") from exc
            if f.type == "int" and not (numbers % 1 == 0).all():
                raise DataError(f"{splits.source}: field {f.name!r} ({split}) has non-integer values")
            frame[f.name] = numbers.astype(PYTHON_TYPES[f.type])


@dataclass
class Task:
    name: str
    contract: Contract
    splits: Splits
    metric: Callable
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # resolved, recorded with every model

    @classmethod
    def from_config(cls, task_cfg) -> Task:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        resolved = OmegaConf.to_container(task_cfg, resolve=True) if OmegaConf.is_config(task_cfg) else task_cfg
        contract = Contract.from_config(resolved.get("inputs"), resolved.get("outputs"), resolved.get("instructions"))
        splits = instantiate(
            task_cfg.data,
            inputs=contract.input_names,
            outputs=contract.output_names,
            label_fields=contract.label_fields,
        )
        _convert_numbers(splits, contract)
        return cls(
            name=str(resolved["name"]),
            contract=contract.with_labels(splits.labels),
            splits=splits,
            metric=named(instantiate(task_cfg.metric)),
            config=resolved,
        )

    def examples(self, split: str) -> list[dspy.Example]:
        return self.splits.examples(split)

    @property
    def output_label_sets(self) -> dict[str, list[str]]:
        return {f.name: list(f.labels) for f in self.contract.outputs if f.type == "label" and f.labels}
