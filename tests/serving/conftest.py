"""Fixtures for the serving tests: the fake provider (streaming, with latency). Models: `tests.serving.models`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.fake_provider import FakeProvider


@pytest.fixture(scope="module")
def fake_provider() -> Iterator[str]:
    """The fake OpenAI server, streaming: 0.2 s to the first chunk, then a chunk every 20 ms."""
    with FakeProvider(0.2, chunk_s=0.02) as fake:
        yield fake.url
