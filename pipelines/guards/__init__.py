"""Guards on a program's text: PII redaction, prompt-injection heuristics, a maximum length.

Configured as the `guard=` group (conf/guard/), applied in evaluation (`Guarded`), in the served model
and in batch scoring (`DSPyProgramModel`, from the guard config its spec.json carries).
"""

from pipelines.guards.base import ACTIONS, Guard, GuardConfigError, GuardRefused, Hit, hit_labels
from pipelines.guards.guard_set import GuardSet, text_fields
from pipelines.guards.guarded import Guarded
from pipelines.guards.injection import InjectionGuard
from pipelines.guards.length import MaxLengthGuard
from pipelines.guards.pii import PIIGuard

__all__ = [
    "ACTIONS",
    "Guard",
    "GuardConfigError",
    "GuardRefused",
    "GuardSet",
    "Guarded",
    "Hit",
    "InjectionGuard",
    "MaxLengthGuard",
    "PIIGuard",
    "hit_labels",
    "text_fields",
]
