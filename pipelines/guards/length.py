"""A maximum text length, in characters (a token count would need the LM's tokenizer at serving time).

`redact` truncates to `max_chars`; `refuse` answers 400; `flag` counts the long text and lets it through.

    >>> MaxLengthGuard(max_chars=5, action="redact").apply("abcdefgh", field="text")[0]
    'abcde'
"""

from __future__ import annotations

from pipelines.guards.base import Finding, Guard, GuardConfigError


class MaxLengthGuard(Guard):
    default_message = "the text is too long"

    def __init__(self, max_chars: int, action: str = "refuse", **kwargs):
        super().__init__(action, **kwargs)
        if int(max_chars) < 1:
            raise GuardConfigError(f"guard {self.name!r}: max_chars must be a positive integer, got {max_chars!r}")
        self.max_chars = int(max_chars)
        self.message = kwargs.get("message") or f"the text is longer than {self.max_chars} characters"

    def find(self, text: str) -> list[Finding]:
        return [Finding(self.max_chars, len(text), "too_long")] if len(text) > self.max_chars else []

    def replacement(self, finding: Finding) -> str:
        return ""
