"""A deterministic fake LM for unit tests of our own logic (never for scores we report).

It answers a classification prompt by keyword rules on the text being classified, so programs
score somewhere between 0 and 1 and optimisers have right and wrong answers to choose between.
It plugs into DSPy the supported way (`dspy.LM(..., engine=...)`) and answers in JSON, as
JSONAdapter expects.
"""

from __future__ import annotations

import json
import re

import dspy
from dspy.clients.engines.base import validate_request
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events

TRAVEL_RULES = {
    "refund": "refund_request",
    "money back": "refund_request",
    "cancel": "cancel_booking",
    "seat": "change_seat",
    "bag": "baggage_policy",
    "luggage": "lost_luggage",
    "suitcase": "lost_luggage",
    "check in": "check_in",
    "check-in": "check_in",
    "boarding pass": "check_in",
    "status": "flight_status",
    "delayed": "flight_status",
    "on time": "flight_status",
    "book": "book_flight",
    "flight to": "book_flight",
}


class KeywordEngine:
    supports_response_schema = True
    supported_params = ("response_format", "temperature", "max_tokens")

    def __init__(self, rules: dict[str, str], default: str, field: str = "text", output: str = "label"):
        self.rules, self.default, self.field, self.output = dict(rules), default, field, output
        self.calls = 0

    def complete(self, request) -> Response:
        validate_request(request)
        self.calls += 1
        last = request.messages[-1].text or ""
        match = re.search(rf"\[\[ ## {self.field} ## \]\]\s*(.*?)(?:\n\n|\[\[|$)", last, re.S)
        text = (match.group(1) if match else last).lower()
        label = next((lab for key, lab in self.rules.items() if key in text), self.default)
        body = json.dumps({self.output: label})
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


def fake_lm(rules: dict[str, str] | None = None, default: str = "book_flight", cache: bool = False, **_) -> dspy.LM:
    """`lm._target_: tests.fakes.fake_lm` in a composed config; extra keys of the real LM config are ignored."""
    engine = KeywordEngine(rules or TRAVEL_RULES, default)
    return dspy.LM("fake/keyword", engine=engine, cache=cache, num_retries=0)
