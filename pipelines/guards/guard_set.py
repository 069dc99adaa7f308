"""The configured guards (`guard=` group) as one object: check a row's text fields, trace the hits.

Built from the `guard` config (name -> a guard's config with `_target_`), which also travels in the
model's spec.json, so a served model guards exactly as its evaluation did. Guards apply in config
order, each to the text (`str`) fields of its stages (`stages: [inputs, outputs]`), never to a field named
in code: the task's contract says which fields hold text.

    >>> guards = GuardSet.from_config({"pii": {"_target_": "pipelines.guards.PIIGuard", "action": "redact"}})
    >>> row, hits = guards.check({"text": "I am ann@example.org"}, "inputs", ["text"])
    >>> row, [h.label() for h in hits]
    ({'text': 'I am <EMAIL_ADDRESS>'}, ['pii:redact'])

Inside a trace, each check is a `guard.<stage>` span and each hit a trace tag (`pipelines.guards.tracing`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.config import instantiate
from pipelines.guards.base import Guard, GuardRefused, Hit
from pipelines.guards.tracing import guard_span, record


def text_fields(fields) -> list[str]:
    """The names of a contract's `str` fields (`label` values are checked against their label set already)."""
    return [f.name for f in fields if f.type == "str"]


class GuardSet:
    def __init__(self, guards: list[Guard] | None = None):
        self.guards = list(guards or [])

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> GuardSet:
        """From the `guard` group's mapping; None or {} is no guards, and a guard set to null is left out."""
        return cls([instantiate(c, name=str(name)) for name, c in (config or {}).items() if c is not None])

    def __bool__(self) -> bool:
        return bool(self.guards)

    def names(self) -> list[str]:
        return [g.name for g in self.guards]

    def check(self, row: dict, stage: str, fields: list[str], where: str = "") -> tuple[dict, list[Hit]]:
        """`row` after every guard on `stage` (a new dict), and the hits. Raises `GuardRefused`; `where`
        (e.g. "Row 3") prefixes its message."""
        active = [g for g in self.guards if stage in g.stages]
        targets = [f for f in fields if isinstance(row.get(f), str)]
        if not active or not targets:
            return row, []
        row, hits = dict(row), []
        with guard_span(stage, targets) as span:
            try:
                for guard in active:
                    for name in targets:
                        row[name], found = guard.apply(row[name], field=name, stage=stage)
                        hits += found
            except GuardRefused as exc:
                record(span, hits + [exc.hit], None)
                raise GuardRefused(exc.hit, exc.reason, where) from None
            record(span, hits, {f: row[f] for f in targets})
        return row, hits
