"""A served model under load: 16 and 50 clients with no errors and flat memory; hung LM calls block no one.

The model is served as a user serves it (`python -m pipelines.serve`, MLflow's scoring server) with the fake
provider at a fixed latency. Timings are printed (p50/p99, requests/s), never asserted: on two shared cores
they say more about the neighbours than about us. What is asserted is counted: errors, answers, megabytes.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests

from benchmarks.fake_provider import FakeProvider
from benchmarks.load import closed_loop, listening_pid, tree_rss_mb
from tests.helpers import serving_champion
from tests.serving.models import KEYWORDS, PREDICT, TWO_BY_TWO, log_served_model, provider_config

LATENCY_S = 0.1  # each LM call
HANG_S = 25  # an LM call whose text says HANG: far past a normal answer, well inside the provider's 30 s timeout
LOAD_S = 8  # each load phase
WARMUP_S = 3
MAX_GROWTH_MB = 50  # RSS after the load phases vs after warm-up: a leak of ~1 KB per request would show


def body(i: int, word: str | None = None) -> dict:
    """One fresh row (the provider LM has no cache, and no two rows are the same anyway)."""
    word = word or KEYWORDS[i % len(KEYWORDS)][0]
    return {"dataframe_records": [{"ticket": f"{word} please, {uuid.uuid4().hex[:8]}", "channel": "email"}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with FakeProvider(LATENCY_S, hang_s=HANG_S) as fake:
        model = log_served_model(tmp_path_factory.mktemp("load"), TWO_BY_TWO, PREDICT, provider_config(fake.url))
        with serving_champion(model.tracking_uri, overrides=[f"model_uri={model.uri}", "timeout=60"]) as url:
            yield url


@pytest.fixture(scope="module")
def server_rss(served):
    pid = listening_pid(urlparse(served).port)
    return lambda: tree_rss_mb(pid)


def report(phase: str, result) -> None:
    s = result.summary()
    print(
        f"\n{phase}: {s['requests']} requests, {s['errors']} errors, {s['requests_per_s']:.1f} req/s "
        f"(ideal {result.clients / LATENCY_S:.0f}), p50 {s['p50_s']:.3f} s, p99 {s['p99_s']:.3f} s"
    )


def test_16_and_50_clients_get_every_answer_and_memory_stays_flat(served, server_rss):
    warm = closed_loop(served, body, clients=16, duration_s=WARMUP_S)
    assert warm.errors == 0, warm.error_examples
    after_warmup = server_rss()
    for clients in (16, 50):
        result = closed_loop(served, body, clients=clients, duration_s=LOAD_S)
        report(f"{clients} clients", result)
        assert result.errors == 0, result.error_examples
        assert result.ok >= clients  # every client got at least one answer: none starved
    at_end = server_rss()
    print(f"server RSS: {after_warmup:.0f} MB after warm-up, {at_end:.0f} MB at the end")
    assert at_end - after_warmup < MAX_GROWTH_MB


def test_six_hung_requests_do_not_block_the_others(served):
    hung_done = threading.Event()
    hung_answers: list[int] = []

    def hang(i: int) -> None:
        try:
            hung_answers.append(requests.post(f"{served}/invocations", json=body(i, "HANG"), timeout=90).status_code)
        except requests.RequestException:
            hung_answers.append(-1)
        if len(hung_answers) == 6:
            hung_done.set()

    pool = ThreadPoolExecutor(max_workers=6)
    for i in range(6):
        pool.submit(hang, i)
    try:
        # Meanwhile 4 clients for a few seconds. A client timeout well below HANG_S: a request queued behind
        # the hung ones would have to wait for them, and counts as an error here.
        result = closed_loop(served, body, clients=4, duration_s=4, timeout_s=HANG_S / 3)
        report("4 clients beside 6 hung requests", result)
        assert not hung_done.is_set(), f"the hung requests ended early ({hung_answers}): nothing was tested"
        assert result.errors == 0, result.error_examples
        assert result.ok >= 4
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # the hung ones end with the server at module teardown
