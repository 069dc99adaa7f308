"""A DSPy judge as a metric: an LM scores the prediction against the expected output, from 0 to 1.

For free-text outputs where exact match says little (a summary, an explanation). Generic over the task's
fields: the judge reads the example's inputs, the expected outputs and the predicted ones as text.

    >>> judge = LLMJudge(criteria="Same final answer, wording aside.")          # task LM judges
    >>> judge(example, prediction)                                             # doctest: +SKIP
    1.0

As a task's own metric (`task.metric`):

    metric:
      _target_: pipelines.evaluation.dspy_judge.LLMJudge
      criteria: Does the answer give the same final number as the expected one?
"""

from __future__ import annotations

import dspy

from pipelines.evaluation.deepeval_judges import render_fields


class Judgement(dspy.Signature):
    """Judge how well the predicted output answers the input, compared with the expected output."""

    criteria: str = dspy.InputField(desc="what counts as correct")
    task_input: str = dspy.InputField()
    expected: str = dspy.InputField()
    predicted: str = dspy.InputField()
    score: float = dspy.OutputField(desc="from 0.0 (wrong) to 1.0 (fully correct)")


class LLMJudge:
    def __init__(
        self,
        criteria: str = "The predicted output is correct and agrees with the expected output.",
        judge: dspy.LM | None = None,
        name: str = "llm_judge",
    ):
        self.criteria, self.judge, self.__name__ = criteria, judge, name
        self.predict = dspy.Predict(Judgement)

    def __call__(self, example, prediction, trace=None) -> float:
        expected = {k: v for k, v in example.labels().items() if not k.startswith("_")}
        predicted = {k: getattr(prediction, k, None) if prediction is not None else None for k in expected}
        with dspy.context(lm=self.judge or dspy.settings.lm):
            verdict = self.predict(
                criteria=self.criteria,
                task_input=render_fields(dict(example.inputs())),
                expected=render_fields(expected),
                predicted=render_fields(predicted),
            )
        return min(1.0, max(0.0, float(verdict.score)))  # a judge's number, held to a metric's range
