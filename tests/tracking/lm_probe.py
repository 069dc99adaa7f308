"""A fake LM that reports each call it answers by appending a line to a file.

For tests that drive an entry point in a subprocess and must act while it is calling its LM:
`lm._target_=tests.tracking.lm_probe.reporting_fake_lm +lm.calls_file=<path>`.
"""

from __future__ import annotations

from pathlib import Path

import dspy

from tests.fakes import KeywordEngine, fake_lm


def reporting_fake_lm(calls_file: str, **kwargs) -> dspy.LM:
    """`tests.fakes.fake_lm`, whose engine appends a line to `calls_file` before answering each request.

    Patches the fake engine class for the whole process: meant for a subprocess of its own."""
    answer = KeywordEngine.complete
    if getattr(answer, "reports_to", None) is None:

        def complete(self, request):
            with Path(complete.reports_to).open("a") as out:
                out.write("call\n")
            return answer(self, request)

        KeywordEngine.complete = complete
    KeywordEngine.complete.reports_to = calls_file
    return fake_lm(**kwargs)


def calls_reported(calls_file: Path) -> int:
    return calls_file.read_text().count("\n") if calls_file.exists() else 0
