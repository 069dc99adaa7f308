"""What a recipe costs: LM calls (cached ones included) and peak memory while it runs.

>>> with counted_calls() as calls, peak_rss() as peak:            # doctest: +SKIP
...     program(text="where is my card")
>>> calls.calls, round(peak["mb"])                                # doctest: +SKIP
(1, 1130)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dspy
from dspy.utils.callback import BaseCallback


class CallCounter(BaseCallback):
    """Every LM call, answered from DSPy's cache or not: the cost of the recipe on a cold cache."""

    def __init__(self):
        self.calls = 0
        self._lock = threading.Lock()

    def on_lm_start(self, call_id, instance, inputs):
        with self._lock:
            self.calls += 1


@contextmanager
def counted_calls() -> Iterator[CallCounter]:
    counter = CallCounter()
    with dspy.context(callbacks=[*(dspy.settings.callbacks or []), counter]):
        yield counter


@contextmanager
def peak_rss(interval_s: float = 0.2) -> Iterator[dict[str, float]]:
    """Peak resident memory of this process (MB) while the block runs, sampled: llama.cpp's buffers
    are not Python objects, so tracemalloc would not see them."""
    import psutil

    proc, peak, stop = psutil.Process(), {"mb": 0.0}, threading.Event()

    def sample():
        while True:
            peak["mb"] = max(peak["mb"], proc.memory_info().rss / 2**20)
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak["mb"] = max(peak["mb"], proc.memory_info().rss / 2**20)
