"""A stage's usage counts the LM calls its worker threads make (Evaluate, the optimisers at num_threads > 1)."""

from __future__ import annotations

import dspy

from pipelines.lm.usage import measure_usage
from tests.fakes import fake_lm


def evaluate(num_threads: int, rows: int = 8) -> None:
    examples = [dspy.Example(text=f"book a flight {i}", label="book_flight").with_inputs("text") for i in range(rows)]
    dspy.Evaluate(devset=examples, metric=lambda *_: 1.0, num_threads=num_threads, display_progress=False)(
        dspy.Predict("text -> label")
    )


def usage_of(num_threads: int, rows: int = 8) -> dict:
    with dspy.context(lm=fake_lm()), measure_usage() as usage:
        evaluate(num_threads, rows)
    return usage.summary()


def test_calls_made_in_evaluate_threads_are_counted():
    # DSPy's ParallelExecutor gives each worker thread a deep copy of the active tracker and never merges the
    # copies back: under plain dspy.track_usage() the threaded evaluation counted no call at all.
    serial, threaded = usage_of(num_threads=1), usage_of(num_threads=4)
    assert serial["lm_calls"] >= 8 and serial["input_tokens"] > 0  # at least a call per row
    assert threaded == serial


def test_a_nested_stage_rolls_up_into_the_enclosing_one():
    with dspy.context(lm=fake_lm()), measure_usage() as outer:
        with measure_usage() as inner:
            evaluate(num_threads=2, rows=3)
        evaluate(num_threads=1, rows=2)
    assert inner.summary()["lm_calls"] == usage_of(num_threads=1, rows=3)["lm_calls"]
    assert outer.summary()["lm_calls"] == usage_of(num_threads=1, rows=5)["lm_calls"]
