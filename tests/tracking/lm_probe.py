"""A fake LM that reports each call it answers by appending a line to a file, and can hang.

For tests that drive an entry point in a subprocess and must act while it is calling its LM:
`lm._target_=tests.tracking.lm_probe.reporting_fake_lm +lm.calls_file=<path> +lm.hang_after=N`. From call
N+1 on, the LM never answers (as a hung provider would): the run is certainly mid-way when the test acts,
however fast or slow the machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import dspy

from tests.fakes import KeywordEngine, fake_lm

HANG_S = 600.0  # longer than any test waits; the test's signal or kill ends it


def reporting_fake_lm(calls_file: str, hang_after: int | None = None, **kwargs) -> dspy.LM:
    """`tests.fakes.fake_lm`, whose engine appends a line to `calls_file` before answering each request and
    hangs from request `hang_after + 1` on.

    Patches the fake engine class for the whole process: meant for a subprocess of its own."""
    answer = KeywordEngine.complete
    if getattr(answer, "reports_to", None) is None:

        def complete(self, request):
            with Path(complete.reports_to).open("a") as out:
                out.write("call\n")
            if complete.hang_after is not None and calls_reported(Path(complete.reports_to)) > complete.hang_after:
                time.sleep(HANG_S)  # in the main thread when scoring serially: a signal interrupts the sleep
            return answer(self, request)

        KeywordEngine.complete = complete
    KeywordEngine.complete.reports_to = calls_file
    KeywordEngine.complete.hang_after = hang_after
    return fake_lm(**kwargs)


def calls_reported(calls_file: Path) -> int:
    return calls_file.read_text().count("\n") if calls_file.exists() else 0
