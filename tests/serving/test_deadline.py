"""A served request ends at its deadline: rows not started never start, the caller stops waiting for hung ones,
and an LM call retries only while a retry can still finish in time."""

from __future__ import annotations

import threading
import time

import pytest
from hydra.utils import instantiate

from pipelines.model.errors import serving_error
from pipelines.model.row_runner import DeadlinePassed, RowRunner, bound_attempts, run_rows, within
from tests.serving.models import provider_config


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


def test_the_request_stops_waiting_for_hung_rows_at_its_deadline():
    release = threading.Event()

    def program(text):
        release.wait(30)  # an LM call that hangs
        return text

    runner = RowRunner(threads=4)
    start = time.monotonic()
    try:
        with pytest.raises(DeadlinePassed):
            runner.run(program, [{"text": "a"}], lm=None, adapter=None, concurrency=1, deadline=start + 0.3)
        assert time.monotonic() - start < 5  # the caller (a server's request thread) is free again
    finally:
        release.set()


def test_an_lm_call_is_bounded_by_the_request_not_by_timeout_times_retries():
    lm = instantiate(provider_config("http://127.0.0.1:9/v1") | {"num_retries": 3, "timeout": 30})
    bound_attempts(lm, 10)  # as a served model loads, with 10 s requests
    assert lm.kwargs["timeout"] == 10
    assert within(lm, 45) is lm  # 4 attempts of 10 s fit: its own 3 retries
    assert within(lm, 25).num_retries == 1 and within(lm, 5).num_retries == 0
    assert lm.num_retries == 3


def test_a_passed_deadline_is_a_504_for_the_client():
    error = serving_error(DeadlinePassed("not run"))
    assert error.error_code == "DEADLINE_EXCEEDED" and error.get_http_status_code() == 504
