"""The rows of one request: concurrent through a provider LM, serial on the embedded model, never mixed up."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dspy
import pytest
import requests
from hydra.utils import instantiate

from pipelines.lm.json_adapter import JSONAdapter
from pipelines.lm.llama_engine import LlamaCppEngine
from pipelines.model.limits import SERVER_TIMEOUT_ENV
from pipelines.model.row_runner import RowRunner, row_concurrency, run_rows
from pipelines.programs import SingleStep
from pipelines.serve import plain_command, serve_command, serve_environment
from tests.helpers import serving_champion
from tests.serving.models import KEYWORDS, PREDICT, TWO_BY_TWO, log_served_model, provider_config

LATENCY_S = 0.2  # the fake provider's time to answer (fixture `fake_provider`)


def rows(n: int) -> list[dict]:
    """`n` rows, each with its own text and a known right label (cycling through the intents)."""
    return [
        {"ticket": f"{KEYWORDS[i % 4][0]} please, case {i}", "channel": ("email", "phone")[i % 2]} for i in range(n)
    ]


def expected(n: int) -> list[str]:
    return [KEYWORDS[i % 4][1] for i in range(n)]


def test_the_embedded_model_runs_as_many_rows_as_it_has_contexts_whatever_the_setting():
    embedded = dspy.LM("local/qwen", engine=LlamaCppEngine(model_path="never-loaded.gguf"))
    assert row_concurrency(embedded, 16) == 1
    two = dspy.LM("local/qwen", engine=LlamaCppEngine(model_path="never-loaded.gguf", n_contexts=2))
    assert row_concurrency(two, 16) == 2
    provider = instantiate(provider_config("http://127.0.0.1:9/v1"))
    assert row_concurrency(provider, 16) == 16


class InFlight(dspy.Module):
    """The program, counting how many rows are inside it at once (a property of the run, not of the clock)."""

    def __init__(self, program):
        super().__init__()
        self.program, self.now, self.most = program, 0, 0
        self._lock = threading.Lock()

    def forward(self, **row):
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return self.program(**row)
        finally:
            with self._lock:
                self.now -= 1


def test_sixteen_rows_through_a_provider_run_concurrently_in_row_order(fake_provider):
    program = InFlight(SingleStep(TWO_BY_TWO.to_dict()))
    lm, adapter = instantiate(provider_config(fake_provider)), JSONAdapter()
    predictions = run_rows(program, rows(16), lm=lm, adapter=adapter, concurrency=16)
    assert [p.label for p in predictions] == expected(16)
    # Each fake call takes 0.2 s: with 16 threads, rows overlap however loaded the machine is. (How much faster
    # that is is measured by scripts/measure_serving.py, not asserted here.)
    assert program.most > 1
    serial = InFlight(SingleStep(TWO_BY_TWO.to_dict()))
    run_rows(serial, rows(4), lm=lm, adapter=adapter, concurrency=1)
    assert serial.most == 1
    # On the model's own threads, with a deadline (a served request): the same rows, the same order.
    served = InFlight(SingleStep(TWO_BY_TWO.to_dict()))
    deadline = time.monotonic() + 60
    answers = RowRunner(threads=8).run(served, rows(16), lm=lm, adapter=adapter, concurrency=4, deadline=deadline)
    assert [p.label for p in answers] == expected(16)
    assert 1 < served.most <= 4


def test_serve_passes_concurrency_and_stream_to_the_server(make_cfg):
    cfg = make_cfg("serve", ["concurrency=8", "stream=true", "timeout=30", "model_uri=models:/m@champion"])
    command = serve_command(cfg)
    assert command[command.index("--factory") + 1] == "pipelines.serving.agent_server:create_app"
    env = serve_environment(cfg)
    assert env["PIPELINES_SERVE_CONCURRENCY"] == "8"
    assert env["PIPELINES_SERVE_MODEL_URI"] == "models:/m@champion"
    assert env["PIPELINES_SERVE_TIMEOUT"] == "30"
    cfg.stream = False
    command = serve_command(cfg)  # MLflow's scoring app, behind the request guard
    assert command[command.index("--factory") + 1] == "pipelines.serving.scoring_app:create_app"
    env = serve_environment(cfg)
    assert env["PIPELINES_SERVE_MODEL_URI"] == "models:/m@champion" and env[SERVER_TIMEOUT_ENV] == "30"
    assert plain_command(cfg)[:3] == ["mlflow", "models", "serve"]


@pytest.fixture(scope="module")
def scoring_url(fake_provider, tmp_path_factory):
    served = log_served_model(tmp_path_factory.mktemp("rows"), TWO_BY_TWO, PREDICT, provider_config(fake_provider))
    with serving_champion(served.tracking_uri, overrides=[f"model_uri={served.uri}", "concurrency=16"]) as url:
        yield url


def test_concurrent_requests_of_many_rows_each_get_their_own_rows_back(scoring_url):
    batches = [rows(12)[i:] + rows(12)[:i] for i in range(6)]  # six requests, the same rows in six orders

    def ask(batch: list[dict]) -> list[str]:
        body = {"dataframe_records": batch}
        response = requests.post(f"{scoring_url}/invocations", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return [p["label"] for p in response.json()["predictions"]]

    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        answers = list(pool.map(ask, batches))
    for i, answer in enumerate(answers):
        assert answer == expected(12)[i:] + expected(12)[:i]


def test_serve_answers_4xx_where_mlflows_parser_would_answer_500(scoring_url):
    # This module's server is `python -m pipelines.serve` (MLflow's app behind `RequestGuard`).
    url = f"{scoring_url}/invocations"
    bare = requests.post(url, data=b'{"dataframe_records": []}', timeout=30)  # bytes: no Content-Type
    assert bare.status_code == 415 and "Content-Type" in bare.json()["message"]
    deep_json = b"[" * 100_000 + b"]" * 100_000
    deep = requests.post(url, data=deep_json, headers={"Content-Type": "application/json"}, timeout=30)
    assert deep.status_code == 400 and "nests deeper" in deep.json()["message"]
    ok = requests.post(url, json={"dataframe_records": rows(2)}, timeout=30)
    assert ok.status_code == 200, ok.text
