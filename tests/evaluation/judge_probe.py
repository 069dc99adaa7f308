"""A stand-in for a deepeval metric that records the test cases it is asked to measure.

`DeepEvalMetric(RecordingMetric, judge=lm)` builds it the way it builds a deepeval metric
(`factory(model=judge, evaluation_params=...)`); it scores 1.0 when the actual output equals the
expected one, so its mean is the exact-match score and a test can check what the judge was shown.
"""

from __future__ import annotations

from typing import ClassVar


class RecordingMetric:
    built: ClassVar[list[RecordingMetric]] = []
    cases: ClassVar[list] = []

    def __init__(self, model, evaluation_params=None, **kwargs):
        self.model, self.evaluation_params, self.kwargs = model, evaluation_params, kwargs
        self.score: float | None = None
        RecordingMetric.built.append(self)

    def measure(self, test_case, _show_indicator: bool = True) -> float:
        RecordingMetric.cases.append(test_case)
        self.score = float(test_case.actual_output == test_case.expected_output)
        return self.score

    @classmethod
    def reset(cls) -> None:
        cls.built.clear()
        cls.cases.clear()
