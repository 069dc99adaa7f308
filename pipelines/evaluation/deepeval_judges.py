"""deepeval metrics judged by any configured LM, by default the embedded one, as DSPy metrics.

`DSPyJudge` adapts a `dspy.LM` to deepeval's `DeepEvalBaseLLM`: deepeval hands it a prompt and a
pydantic schema; the schema goes to the LM as a JSON-schema response format (a grammar for the
embedded model), and the reply is validated into that schema. No hosted API is called unless the
LM config says so. `DeepEvalMetric` turns a deepeval metric into `metric(example, prediction, trace=None)`.

    >>> judge = DSPyJudge(local_lm())                                                 # doctest: +SKIP
    >>> relevancy = DeepEvalMetric(partial(AnswerRelevancyMetric, async_mode=False), judge=judge.lm)
    >>> relevancy(example, prediction)                                                # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

import dspy
from deepeval.models.base_model import DeepEvalBaseLLM
from deepeval.test_case import LLMTestCase


def _json_block(text: str) -> str:
    """The JSON object in a reply (models sometimes wrap it in prose or code fences)."""
    match = re.search(r"\{.*\}", text, re.S)
    return match.group(0) if match else text


class DSPyJudge(DeepEvalBaseLLM):
    def __init__(self, lm: dspy.LM):
        self.lm = lm
        super().__init__(model=lm.model)

    def load_model(self):
        return self.lm

    def generate(self, prompt: str, schema=None, **kwargs):
        kwargs = {}
        if schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": True},
            }
        out = self.lm(prompt, **kwargs)[0]
        text = out if isinstance(out, str) else out.get("text", "")
        if schema is None:
            return text
        return schema.model_validate(json.loads(_json_block(text)))

    async def a_generate(self, prompt: str, schema=None, **kwargs):
        return await asyncio.to_thread(self.generate, prompt, schema)

    def get_model_name(self, *args, **kwargs) -> str:
        return f"dspy:{self.lm.model}"


def render_fields(values: dict) -> str:
    """Fields as text for a judge: the bare value for one field, `name: value` lines for several."""
    if len(values) == 1:
        value = next(iter(values.values()))
        return "" if value is None else str(value)
    return "\n".join(f"{k}: {v}" for k, v in values.items())


class DeepEvalMetric:
    """A deepeval metric (built by `metric(model=judge)`) with DSPy's metric signature; score in [0, 1].

    The judge sees the example's inputs, the predicted outputs and the expected ones, whatever the
    task's field names are; so a judge can be a task's own metric for free-text outputs. `judge=None`
    uses the LM configured when it is called (`dspy.settings.lm`: the task LM), so a task YAML needs no LM.
    """

    def __init__(
        self,
        metric: Callable,
        judge: dspy.LM | None = None,
        name: str | None = None,
        evaluation_params: list[str] | None = None,
    ):
        self.factory, self.judge_lm = metric, judge
        self.evaluation_params = evaluation_params
        self.__name__ = name or getattr(getattr(metric, "func", metric), "__name__", "deepeval")

    def build(self):
        kwargs = {"model": DSPyJudge(self.judge_lm or dspy.settings.lm)}
        if self.evaluation_params:
            from deepeval.test_case import SingleTurnParams

            kwargs["evaluation_params"] = [SingleTurnParams(p) for p in self.evaluation_params]
        return self.factory(**kwargs)

    def __call__(self, example, prediction, trace=None) -> float:
        expected = {k: v for k, v in example.labels().items() if not k.startswith("_")}
        predicted = {k: getattr(prediction, k, None) if prediction is not None else None for k in expected}
        case = LLMTestCase(
            input=render_fields(dict(example.inputs())),
            actual_output=render_fields(predicted),
            expected_output=render_fields(expected),
        )
        metric = self.build()
        metric.measure(case, _show_indicator=False)
        return float(metric.score or 0.0)
