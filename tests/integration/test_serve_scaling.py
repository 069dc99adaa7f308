"""`serve workers=N timeout=S` in front of the registered champion: workers pass through, a hung LM times out."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from pipelines.model.limits import SERVER_TIMEOUT_ENV
from pipelines.serve import plain_command, serve_command, serve_environment
from tests.helpers import serving_champion

TIMEOUT_S = 3


def ask(url: str, text: str) -> requests.Response:
    body = {"dataframe_split": {"columns": ["text"], "data": [[text]]}}
    return requests.post(f"{url}/invocations", json=body, timeout=60)


def test_workers_and_timeout_reach_the_scoring_server(make_cfg):
    cfg = make_cfg("serve", ["model_uri=models:/m@champion", "workers=4", "timeout=30"])
    command = serve_command(cfg)
    assert command[command.index("--workers") + 1] == "4"
    assert serve_environment(cfg)[SERVER_TIMEOUT_ENV] == "30"  # MLflow's scoring server reads it there
    plain = plain_command(cfg)  # the same server by MLflow's own command, printed by `serve`
    assert plain[plain.index("--workers") + 1] == "4" and plain[plain.index("--timeout") + 1] == "30"


@pytest.mark.slow
def test_a_hung_lm_answers_504_within_the_timeout_and_the_server_keeps_serving(project, champion):
    overrides = ["workers=2", f"timeout={TIMEOUT_S}", "tracking=server"]
    with serving_champion(project.server.url, overrides=overrides, env=project.env) as url:
        assert ask(url, "where is my suitcase").json() == {"predictions": [{"label": "lost_luggage"}]}
        start = time.monotonic()
        # The fake LM sleeps far past the timeout; a fresh text each run, so no cache can answer it.
        hung = ask(url, f"HANG on, where is my flight {uuid.uuid4().hex[:8]}")
        assert hung.status_code == 504
        assert time.monotonic() - start < TIMEOUT_S + 5
        assert requests.get(f"{url}/ping", timeout=5).status_code == 200
        assert ask(url, "I want a refund").json() == {"predictions": [{"label": "refund_request"}]}
