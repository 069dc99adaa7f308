"""A served request's rows stop starting once the server's timeout has passed: its client already has a 504."""

from __future__ import annotations

import pytest

from pipelines.model.errors import serving_error
from pipelines.model.row_runner import SERVER_TIMEOUT_ENV, DeadlinePassed, request_deadline, run_rows


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rows_not_started_by_the_deadline_never_run():
    clock, ran = Clock(), []

    def program(text):  # each row takes 10 s of the request's time
        ran.append(text)
        clock.now += 10
        return text.upper()

    rows = [{"text": t} for t in ("a", "b", "c", "d")]
    assert run_rows(program, rows, lm=None, adapter=None, concurrency=1, deadline=None, clock=clock) == list("ABCD")
    clock.now, ran[:] = 0.0, []
    with pytest.raises(DeadlinePassed):
        run_rows(program, rows, lm=None, adapter=None, concurrency=1, deadline=15, clock=clock)
    assert ran == ["a", "b"]  # "b" started at 10 s, inside the deadline; "c" at 20 s did not start


def test_the_deadline_is_the_scoring_servers_timeout_and_only_there():
    assert request_deadline({SERVER_TIMEOUT_ENV: "60"}, clock=lambda: 100.0) == 160.0
    assert request_deadline({}, clock=lambda: 100.0) is None  # batch scoring, a notebook: no deadline


def test_a_passed_deadline_is_a_504_for_the_client():
    error = serving_error(DeadlinePassed("not run"))
    assert error.error_code == "DEADLINE_EXCEEDED" and error.get_http_status_code() == 504
