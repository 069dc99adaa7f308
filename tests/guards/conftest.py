"""Fixtures shared by the guard tests."""

from __future__ import annotations

import pytest

from tests.fakes import KeywordEngine


@pytest.fixture
def lm_requests(monkeypatch):
    """The text of every message any fake LM is sent."""
    seen: list[str] = []
    complete = KeywordEngine.complete

    def recording(self, request):
        seen.extend(m.text or "" for m in request.messages)
        return complete(self, request)

    monkeypatch.setattr(KeywordEngine, "complete", recording)
    return seen
