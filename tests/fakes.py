"""A deterministic fake LM for unit tests of our own logic (never for scores we report).

It answers a classification prompt by keyword rules on the text being classified, so programs
score somewhere between 0 and 1 and optimisers have right and wrong answers to choose between.
It plugs into DSPy the supported way (`dspy.LM(..., engine=...)`) and answers in JSON, as
JSONAdapter expects.
"""

from __future__ import annotations

import json
import random
import re

import dspy
from dspy.clients.engines.base import validate_request
from dspy.clients.provider import Provider
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events

from benchmarks.fake_provider import TRAVEL_RULES
from pipelines.lm.async_engine import ThreadedAsyncEngine


class KeywordEngine:
    """Answers every JSON output field the adapter's schema asks for.

    The label comes from keyword rules; when no rule fires, from the demo in the prompt whose text
    shares most words with the input (so demos help, and optimisers have something to choose); at
    temperature > 0, one answer in four is a random other label (so sampling varies). Other string
    fields (an optimiser's proposed instruction, a description) get a short fixed sentence.
    """

    supports_response_schema = True
    supported_params = ("response_format", "temperature", "max_tokens")

    def __init__(self, rules: dict[str, str], default: str, field: str = "text", output: str = "label", seed=0):
        self.rules, self.default, self.field, self.output = dict(rules), default, field, output
        self.rng = random.Random(seed)
        self.calls = 0

    def _field(self, content: str, name: str) -> str | None:
        match = re.search(rf"\[\[ ## {name} ## \]\]\s*(.*?)(?:\n\n|\[\[|$)", content, re.S)
        return match.group(1).strip() if match else None

    def _label(self, request, labels: list[str]) -> str:
        messages = request.messages
        text = (self._field(messages[-1].text or "", self.field) or messages[-1].text or "").lower()
        label = next((lab for key, lab in self.rules.items() if key in text), None)
        if label is None:  # nearest demo by shared content words (at least two in common)
            words, best = set(re.findall(r"[a-z]{4,}", text)), (1, self.default)
            for user, reply in zip(messages[:-1:2], messages[1:-1:2], strict=False):
                demo_text = (self._field(user.text or "", self.field) or "").lower()
                overlap = len(words & set(re.findall(r"[a-z]{4,}", demo_text)))
                demo_label = _json_field(reply.text or "", self.output)
                if demo_label and overlap > best[0]:
                    best = (overlap, demo_label)
            label = best[1]
        temperature = request.config.temperature or 0.0
        if temperature > 0 and labels and self.rng.random() < 0.25:
            label = self.rng.choice(labels)
        return label

    def complete(self, request) -> Response:
        validate_request(request)
        self.calls += 1
        schema = _schema(request.config.response_format)
        props = schema.get("properties") or {self.output: {}}
        answer = {}
        for name, prop in props.items():
            if name == self.output:
                answer[name] = self._label(request, prop.get("enum") or [])
            elif prop.get("enum"):
                answer[name] = prop["enum"][0]
            elif prop.get("type") in ("integer", "number"):
                answer[name] = 1
            elif prop.get("type") == "array":
                answer[name] = []
            elif prop.get("type") == "object" or "anyOf" in prop or "$ref" in prop:
                answer[name] = {}  # a structured field (a ReAct step's tool arguments): an empty object
            else:
                answer[name] = "Classify the customer's message by its main request."
        body = json.dumps(answer)
        last = request.messages[-1].text or ""
        return Response(
            id=f"fake-{self.calls}",
            model="fake",
            message=Message.assistant((TextPart(body),)),
            finish_reason="stop",
            usage=Usage(input_tokens=len(last) // 4, output_tokens=len(body) // 4),
        )

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self):
        pass


class GarbageEngine(KeywordEngine):
    """Answers every call, but in prose no adapter parses (a misconfigured server, a wrong adapter): always,
    or only where the text holds one of the words in `only`."""

    def __init__(self, *args, only=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.only = [word.lower() for word in only or []]

    def complete(self, request) -> Response:
        text = (self._field(request.messages[-1].text or "", self.field) or "").lower()
        if self.only and not any(word in text for word in self.only):
            return super().complete(request)
        validate_request(request)
        self.calls += 1
        return Response(
            id=f"garbage-{self.calls}",
            model="fake",
            message=Message.assistant((TextPart("Sure! Here is my answer: it depends."),)),
            finish_reason="stop",
            usage=Usage(input_tokens=10, output_tokens=8),
        )


def _schema(response_format) -> dict:
    if not response_format:
        return {}
    schema = response_format.get("schema") or (response_format.get("json_schema") or {}).get("schema") or {}
    return schema


def _json_field(text: str, name: str) -> str | None:
    try:
        value = json.loads(text).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class FakeFinetuneProvider(Provider):
    """A fine-tuning provider that trains nothing: records the rows and returns a new model id (or fails)."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.finetunable = True
        self.fail = fail
        self.jobs: list[list[dict]] = []

    def finetune(self, job, model, train_data, train_data_format, train_kwargs=None) -> str:
        if self.fail:
            raise RuntimeError("fake fine-tuning backend is down")
        self.jobs.append(train_data)
        return f"{model}:ft-fake{len(self.jobs)}"


def fake_lm(
    rules: dict[str, str] | None = None,
    default: str = "book_flight",
    cache: bool = False,
    finetune: str | None = None,
    model: str = "fake/keyword",
    garbage: bool | list[str] = False,
    **_,
) -> dspy.LM:
    """`lm._target_: tests.fakes.fake_lm` in a composed config; extra keys of the real LM config are ignored.

    `finetune="ok"` / `"fail"` gives it a fake fine-tuning provider that succeeds / raises; `garbage=true`
    an LM that answers every call in prose no adapter parses (`garbage=[words]`: only texts holding one).
    """
    if garbage:
        only = None if garbage is True else list(garbage)
        engine = GarbageEngine(rules or TRAVEL_RULES, default, only=only)
    else:
        engine = KeywordEngine(rules or TRAVEL_RULES, default)
    provider = FakeFinetuneProvider(fail=finetune == "fail") if finetune in ("ok", "fail") else None
    return dspy.LM(
        model, engine=engine, async_engine=ThreadedAsyncEngine(engine), cache=cache, num_retries=0, provider=provider
    )
