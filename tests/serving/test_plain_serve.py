"""The model carries its bounds: plain `mlflow models serve` (no `pipelines.serve`) serves it as safely.

One server process for the module (`mlflow models serve -m models:/served@champion --env-manager local -t 6`),
started with HOME pointed at an empty folder and the working directory at another, as an operator would start
it by hand or as MLflow's Docker image does. The model's LM is the fake provider, keyed per row: a row whose
text holds HANG is held by the fake until it stops.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import requests

from benchmarks.fake_provider import FakeProvider
from benchmarks.serve_process import process_group
from tests.helpers import free_port, wait_for_ping
from tests.serving.models import PREDICT, log_served_model, provider_config
from tests.serving.test_upstream_errors import INTENTS

SERVER_TIMEOUT_S = 6  # `mlflow models serve -t`: a request's deadline in the model too
HUNG = 8


def rows(*texts: str) -> dict:
    return {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain")
    home, work = root / "home", root / "work"
    home.mkdir()
    work.mkdir()
    with FakeProvider(0.05) as fake:
        # Retries and a 30 s attempt timeout: unbounded, one hung call would hold its thread for 4 x 30 s.
        lm = provider_config(fake.url) | {"cache": True, "num_retries": 3, "timeout": 30}
        served = log_served_model(root / "store", INTENTS, PREDICT, lm)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_SERVE_", "XDG_", "UVICORN_"))}
        env |= {
            "HOME": str(home),
            "MLFLOW_TRACKING_URI": served.tracking_uri,
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]),  # uvicorn, by name
            # MLflow's CLI keeps an installation id in ~/.config/mlflow unless telemetry is off: MLflow's file,
            # written before the model loads (docs: serving), not the model's.
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        port = free_port()
        serve = ["models", "serve", "-m", served.uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
        command = [sys.executable, "-m", "mlflow", *serve, "-t", str(SERVER_TIMEOUT_S)]
        with (root / "server.log").open("w") as log, process_group(command, cwd=work, env=env, output=log) as proc:
            url = f"http://127.0.0.1:{port}"  # the log is kept for a failing test's reader
            wait_for_ping(url, proc)
            yield SimpleNamespace(url=url, home=home, work=work, fake=fake)


def test_five_thousand_rows_are_a_400_naming_the_batch_scorer(plain):
    sent = plain.fake.requests
    response = requests.post(f"{plain.url}/invocations", json=rows(*["refund please"] * 5000), timeout=60)
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert "at most 1000" in message and "python -m pipelines.score" in message
    assert plain.fake.requests == sent  # refused before any LM call


def test_nothing_is_written_under_home(plain):
    response = requests.post(f"{plain.url}/invocations", json=rows("my suitcase is gone"), timeout=30)
    assert response.status_code == 200, response.text
    assert sorted(plain.home.rglob("*")) == []
    assert (plain.work / ".dspy_cache").is_dir()  # DSPy's disk cache: in the server's working directory


def test_a_normal_request_answers_while_eight_lm_calls_hang(plain):
    hung: list = []

    def hang(i: int) -> None:
        try:
            response = requests.post(f"{plain.url}/invocations", json=rows(f"HANG {i}"), timeout=60)
            hung.append((response.status_code, time.monotonic() - start))
        except requests.RequestException as exc:  # the module's server stopped first
            hung.append((type(exc).__name__, None))

    sent, start = plain.fake.requests, time.monotonic()
    threads = [threading.Thread(target=hang, args=(i,), daemon=True) for i in range(HUNG)]
    for thread in threads:
        thread.start()
    while plain.fake.requests < sent + HUNG and time.monotonic() - start < 5:
        time.sleep(0.05)
    assert plain.fake.requests == sent + HUNG  # all eight are at the LM, held there

    asked = time.monotonic()
    response = requests.post(f"{plain.url}/invocations", json=rows("refund please"), timeout=30)
    assert response.status_code == 200, response.text
    assert time.monotonic() - asked < 10
    assert response.json()["predictions"] == [{"label": "refund_request"}]

    for thread in threads:
        thread.join(timeout=SERVER_TIMEOUT_S + 10)
    # The hung requests end at their deadline (a 504), and their LM calls with them: one attempt each, not the
    # LM's 3 retries of 30 s (a retry would reach the fake as a new request).
    assert sorted(status for status, _ in hung) == [504] * HUNG, hung
    assert max(elapsed for _, elapsed in hung) < SERVER_TIMEOUT_S + 5
    time.sleep(1)
    assert plain.fake.requests == sent + HUNG + 1
