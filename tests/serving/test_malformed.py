"""Every malformed request the model sees is a 4xx; the two MLflow's parser answers 500 are 4xx behind `serve`.

Through MLflow's own scoring app (`scoring_server.init`, what `mlflow models serve` runs), in process.
"""

from __future__ import annotations

import json

import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow.pyfunc import scoring_server

from pipelines.serving.scoring_app import MAX_DEPTH, RequestGuard, nesting_depth
from tests.serving.models import PREDICT, log_served_model, provider_config
from tests.serving.test_upstream_errors import INTENTS

JSON = "application/json"
MALFORMED = {
    "a number for text": (JSON, {"dataframe_split": {"columns": ["text"], "data": [[1]]}}),
    "an unknown column": (JSON, {"dataframe_split": {"columns": ["nope"], "data": [["x"]]}}),
    "a null": (JSON, {"dataframe_records": [{"text": None}]}),
    "NaN": (JSON, b'{"dataframe_split": {"columns": ["text"], "data": [[NaN]]}}'),
    "empty text": (JSON, {"inputs": {"text": ["a", " "]}}),
    "an object for text": (JSON, {"dataframe_records": [{"text": {"nested": 1}}]}),
    "a list for text": (JSON, {"dataframe_records": [{"text": ["a", "b"]}]}),
    "no rows": (JSON, {"dataframe_records": []}),
    "a bare string": (JSON, "hello"),
    "a chat body": (JSON, {"messages": [{"role": "user", "content": "hi"}]}),
    "ragged rows": (JSON, {"dataframe_split": {"columns": ["text"], "data": [["a"], ["b", "c"]]}}),
    "broken JSON": (JSON, b'{"inputs": '),
    "not UTF-8": (JSON, b'{"inputs": {"text": ["\xff"]}}'),
    "a CSV without the column": ("text/csv", b"nope\nx\n"),
    "an empty CSV": ("text/csv", b""),
    "not Parquet": ("application/vnd.apache.parquet", b"not parquet"),
    "plain text": ("text/plain", b"hello"),
    "rows past max_rows": (JSON, {"dataframe_split": {"columns": ["text"], "data": [["refund"]] * 1001}}),
}


@pytest.fixture(scope="module")
def app(fake_provider, tmp_path_factory):
    served = log_served_model(tmp_path_factory.mktemp("malformed"), INTENTS, PREDICT, provider_config(fake_provider))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "60")  # a scoring server, as `mlflow models serve` sets
        mp.setenv("PIPELINES_SERVE_FREEZE_HEAP", "false")  # this test process is not one
        yield scoring_server.init(mlflow.pyfunc.load_model(served.uri))


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_request_the_model_sees_is_a_4xx(app, name, monkeypatch):
    monkeypatch.setenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "60")
    content_type, body = MALFORMED[name]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = TestClient(app).post("/invocations", content=data, headers={"Content-Type": content_type})
    assert 400 <= response.status_code < 500, response.text


def test_the_request_guard_answers_4xx_where_mlflows_parser_answers_500(app):
    plain = TestClient(app, raise_server_exceptions=False)
    guarded = TestClient(RequestGuard(app))
    deep = b"[" * 100_000 + b"]" * 100_000
    assert plain.post("/invocations", content=b'{"inputs": {"text": ["a"]}}').status_code == 500  # MLflow 3.17
    assert plain.post("/invocations", content=deep, headers={"Content-Type": JSON}).status_code == 500
    bare = guarded.post("/invocations", content=b'{"inputs": {"text": ["a"]}}')
    assert bare.status_code == 415 and "Content-Type" in bare.json()["message"]
    nested = guarded.post("/invocations", content=deep, headers={"Content-Type": JSON})
    assert nested.status_code == 400 and "nests deeper" in nested.json()["message"]
    ok = guarded.post("/invocations", json={"dataframe_split": {"columns": ["text"], "data": [["refund"]]}})
    assert ok.status_code == 200 and ok.json()["predictions"] == [{"label": "refund_request"}]
    assert guarded.get("/ping").status_code == 200


def test_nesting_depth_skips_strings_and_stops_past_the_limit():
    assert nesting_depth(b'{"dataframe_split": {"columns": ["text"], "data": [["a [[[[ b"]]}}') <= 4
    assert nesting_depth(b'"' + b"[" * 500 + b'"') == 0
    assert nesting_depth(b"[" * 500 + b"]" * 500) == MAX_DEPTH + 1
    rows = json.dumps({"dataframe_records": [{"text": "x"}] * 5000}).encode()  # many brackets, shallow
    assert nesting_depth(rows) == 3
