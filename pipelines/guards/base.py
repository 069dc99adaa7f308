"""What every guard shares: the actions, a finding in a text, a hit to count, the refusal a client sees.

A guard only *finds* spans of a text (`find`); what happens to them is its configured `action`:

- `redact`: each span is replaced (`replacement`) before the text goes on (to the LM, or to the client);
- `refuse`: the request (or evaluation row) is answered with `GuardRefused`, an HTTP 400 naming the guard;
- `flag`: the text goes on unchanged, the hit is counted and tagged on the trace.

    >>> from pipelines.guards import PIIGuard
    >>> PIIGuard(action="redact").apply("mail me at ann@example.org", field="text")[0]
    'mail me at <EMAIL_ADDRESS>'
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

ACTIONS = ("redact", "refuse", "flag")
STAGES = ("inputs", "outputs")


class GuardConfigError(ValueError):
    """A guard's configuration is wrong; the message names the guard and the options."""


class GuardRefused(MlflowException):
    """A guard with `action: refuse` stopped a row. INVALID_PARAMETER_VALUE is what MLflow's scoring server
    answers with HTTP 400; batch scoring records the message as that row's error."""

    def __init__(self, hit: Hit, reason: str, where: str = ""):
        self.hit, self.reason = hit, reason
        text = f"Refused by guard {hit.guard!r} ({hit.kind} in {hit.stage[:-1]} field {hit.field!r}): {reason}"
        super().__init__(f"{where}: {text}" if where else text, error_code=INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    kind: str  # what was found: an entity type (EMAIL_ADDRESS), a pattern's name, `too_long`


@dataclass(frozen=True)
class Hit:
    """One guard firing on one field of one row. Never holds the matched text: hits go to traces and runs."""

    guard: str
    stage: str  # inputs | outputs
    field: str
    kind: str
    action: str
    count: int = 1

    def label(self) -> str:
        return f"{self.guard}:{self.action}"


def hit_labels(hits) -> str | None:
    """A row's hits as one cell (`pii:redact EMAIL_ADDRESS; injection:flag ...`), None if it has none: the
    `guard` column of an evaluation table and the `guard_hits` column of a scored file."""
    return "; ".join(f"{h.label()} {h.kind}" for h in hits) or None


class Guard:
    """Base class: subclasses implement `find(text) -> list[Finding]` and may override `replacement`."""

    default_message = "the text was refused by a content guard"

    def __init__(
        self, action: str, stages: list[str] | tuple[str, ...] = ("inputs",), message: str | None = None, name=None
    ):
        self.name = name or type(self).__name__
        if action not in ACTIONS:
            raise GuardConfigError(f"guard {self.name!r}: unknown action {action!r}; choose one of {list(ACTIONS)}")
        unknown = sorted(set(stages) - set(STAGES))
        if unknown or not stages:
            raise GuardConfigError(
                f"guard {self.name!r}: `stages` must list some of {list(STAGES)}, got {list(stages)}"
            )
        self.action = action
        self.stages = tuple(stages)
        self.message = message or self.default_message

    def find(self, text: str) -> list[Finding]:
        raise NotImplementedError

    def replacement(self, finding: Finding) -> str:
        return f"<{finding.kind}>"  # Presidio's anonymiser default: the entity type in angle brackets

    def apply(self, text: str, *, field: str, stage: str = "inputs") -> tuple[str, list[Hit]]:
        """`text` after this guard's action, and its hits (one per kind found). Raises `GuardRefused`."""
        findings = self.find(text)
        if not findings:
            return text, []
        counts: dict[str, int] = {}
        for f in findings:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        hits = [Hit(self.name, stage, field, kind, self.action, n) for kind, n in counts.items()]
        if self.action == "refuse":
            raise GuardRefused(hits[0], self.message)
        if self.action == "redact":
            for f in sorted(findings, key=lambda f: f.start, reverse=True):  # from the end: offsets stay valid
                text = text[: f.start] + self.replacement(f) + text[f.end :]
        return text, hits


def non_overlapping(findings: list[Finding]) -> list[Finding]:
    """Earliest-longest first, dropping any finding that overlaps one already kept."""
    kept: list[Finding] = []
    for f in sorted(findings, key=lambda f: (f.start, -(f.end - f.start))):
        if not kept or f.start >= kept[-1].end:
            kept.append(f)
    return kept
