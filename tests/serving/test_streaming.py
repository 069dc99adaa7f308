"""Streaming a registered program's answer: in process (`predict_stream`) and over HTTP (`serve stream=true`)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from pipelines.model.streaming import output_listeners
from tests.helpers import serving_champion
from tests.serving.models import DRAFT_VERIFY, KEYWORDS, TWO_BY_TWO, log_served_model, provider_config

ROW = {"ticket": "where is my suitcase", "channel": "email"}


@pytest.fixture(scope="module")
def two_stage(fake_provider, tmp_path_factory):
    """draft (ChainOfThought) -> verify, two inputs and two outputs, over the fake provider."""
    return log_served_model(
        tmp_path_factory.mktemp("two_stage"), TWO_BY_TWO, DRAFT_VERIFY, provider_config(fake_provider)
    )


def test_listeners_follow_the_last_stage_that_writes_each_output():
    from pipelines.programs import DraftThenVerify

    program = DraftThenVerify(TWO_BY_TWO.to_dict())
    listeners = output_listeners(program, TWO_BY_TWO.output_names)
    assert [(lis.signature_field_name, lis.predict_name) for lis in listeners] == [
        ("label", "verify"),
        ("reply", "verify"),
    ]


def test_predict_stream_yields_the_last_stage_in_pieces_then_the_prediction(two_stage):
    mlflow.set_tracking_uri(two_stage.tracking_uri)
    model = mlflow.pyfunc.load_model(two_stage.uri)
    chunks = list(model.predict_stream(ROW))
    *deltas, final = chunks
    assert final == {"prediction": {"label": "lost_luggage", "reply": "A fixed answer."}}
    assert {c["field"] for c in deltas} == {"label", "reply"}  # never the intermediate `draft`
    assert len(deltas) > 2  # pieces, not the answer in one go
    for field, value in final["prediction"].items():
        assert "".join(c["delta"] for c in deltas if c["field"] == field) == value


def test_predict_stream_refuses_what_predict_refuses(two_stage):
    mlflow.set_tracking_uri(two_stage.tracking_uri)
    model = mlflow.pyfunc.load_model(two_stage.uri).unwrap_python_model()
    with pytest.raises(mlflow.exceptions.MlflowException, match="empty text"):
        next(model.predict_stream(None, {"ticket": "  ", "channel": "email"}))


def sse_events(response: requests.Response, start: float) -> list[tuple[float, dict | str]]:
    """(seconds since the request was sent at `start`, payload) per Server-Sent Event, as a client reads them."""
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if line and line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append((time.monotonic() - start, data if data == "[DONE]" else json.loads(data)))
    return events


def stream(url: str, content: str) -> list[tuple[float, dict | str]]:
    body = {"input": [{"role": "user", "content": content}], "stream": True}
    start = time.monotonic()  # before the request: the server's deadline starts when it arrives
    with requests.post(f"{url}/responses", json=body, stream=True, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_events(response, start)


@pytest.fixture(scope="module")
def agent_url(two_stage):
    """`python -m pipelines.serve stream=true` in front of the two-stage model."""
    overrides = ["stream=true", f"model_uri={two_stage.uri}", "tracking.experiment=serving-traces"]
    with serving_champion(two_stage.tracking_uri, overrides=overrides) as url:
        yield url


def test_serve_stream_true_streams_the_answer_over_http_and_traces_it(two_stage, agent_url):
    events = stream(agent_url, json.dumps(ROW))
    body = {"input": [{"role": "user", "content": "hi"}], "custom_inputs": ROW}
    ticket_only = requests.post(f"{agent_url}/responses", json=body, timeout=60).json()

    assert events[-1][1] == "[DONE]"
    deltas = [(t, e) for t, e in events if isinstance(e, dict) and e["type"] == "response.output_text.delta"]
    done = [(t, e) for t, e in events if isinstance(e, dict) and e["type"] == "response.output_item.done"]
    assert len(deltas) > 2 and len(done) == 2
    assert deltas[0][0] < done[0][0]  # the client read tokens before the answer was complete
    texts = {e["item"]["id"]: e["item"]["content"][0]["text"] for _, e in done}
    assert sorted(texts.values()) == ["A fixed answer.", "lost_luggage"]
    for item_id, text in texts.items():
        assert "".join(e["delta"] for _, e in deltas if e["item_id"] == item_id) == text
    assert done[-1][1]["custom_outputs"] == {"label": "lost_luggage", "reply": "A fixed answer."}
    # Not streamed: the same answer in one piece, the inputs given as custom_inputs.
    assert ticket_only["custom_outputs"] == {"label": "lost_luggage", "reply": "A fixed answer."}

    client = MlflowClient(two_stage.tracking_uri)
    experiment = client.get_experiment_by_name("serving-traces")

    def streamed_traces():  # a server exporting traces in the background (MLflow's default) writes them late
        traces = client.search_traces(locations=[experiment.experiment_id])
        roots = [root_span(t) for t in traces]
        return [
            t for t, r in zip(traces, roots, strict=True) if r and r.get_attribute("time_to_first_token_s") is not None
        ]

    deadline = time.monotonic() + 90  # a loaded machine's server process exports late; found at once otherwise
    while not (streamed := streamed_traces()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(streamed) == 1
    root = root_span(streamed[0])
    assert [e.name for e in root.events] == ["first_token"]
    assert {s.name for s in streamed[0].data.spans} >= {"DraftThenVerify.forward", "Predict.forward"}


def root_span(trace):
    """The trace's root span, None while the background export has not written it yet."""
    return next((s for s in trace.data.spans if s.parent_id is None), None)


def test_a_bad_request_to_the_agent_server_is_a_400_and_it_keeps_serving(agent_url):
    missing = {"input": [{"role": "user", "content": "just text, but the model takes two inputs"}]}
    response = requests.post(f"{agent_url}/invocations", json=missing, timeout=60)
    assert response.status_code == 400 and "as custom_inputs" in response.json()["message"]
    empty = {"input": [{"role": "user", "content": "hi"}], "custom_inputs": {**ROW, "ticket": "   "}}
    response = requests.post(f"{agent_url}/invocations", json=empty, timeout=60)
    assert response.status_code == 400 and "empty text" in response.json()["message"]
    body = {"input": [{"role": "user", "content": "hi"}], "custom_inputs": ROW}
    assert requests.post(f"{agent_url}/invocations", json=body, timeout=60).status_code == 200


def test_concurrent_streams_each_get_their_own_answer(agent_url):
    tickets = {f"{word} please, case {i}": label for i, (word, label) in enumerate(KEYWORDS * 2)}

    def label_of(ticket: str) -> str:
        events = stream(agent_url, json.dumps({"ticket": ticket, "channel": "phone"}))
        return next(e["custom_outputs"]["label"] for _, e in events if isinstance(e, dict) and e.get("custom_outputs"))

    with ThreadPoolExecutor(max_workers=len(tickets)) as pool:
        answers = dict(zip(tickets, pool.map(label_of, tickets), strict=True))
    assert answers == tickets


def test_an_output_guard_holds_back_the_partial_outputs(two_stage):
    from pipelines.guards.guard_set import GuardSet
    from pipelines.guards.pii import PIIGuard

    mlflow.set_tracking_uri(two_stage.tracking_uri)
    model = mlflow.pyfunc.load_model(two_stage.uri).unwrap_python_model()
    model.guards = GuardSet([PIIGuard(stages=["outputs"])])  # redaction sees whole values, never tokens
    assert list(model.predict_stream(None, ROW)) == [
        {"prediction": {"label": "lost_luggage", "reply": "A fixed answer."}}
    ]


def test_the_timeout_bounds_the_whole_stream_and_the_server_keeps_serving(tmp_path):
    """A stream whose LM starts at once but dribbles its answer: the server's timeout ends the stream with an
    error event (its headers left long before, so a bound on the response's start would never fire)."""
    from benchmarks.fake_provider import FakeProvider
    from tests.serving.models import PREDICT

    timeout_s = 4  # the first delta comes after ~3 chunks (~1.3 s); the whole answer needs ~10 s
    with FakeProvider(0.05, chunk_s=0.8) as fake:  # ~13 chunks
        slow = log_served_model(tmp_path / "slow", TWO_BY_TWO, PREDICT, provider_config(fake.url), name="slow")
        overrides = ["stream=true", f"model_uri={slow.uri}", f"timeout={timeout_s}", "trace=false"]
        with serving_champion(slow.tracking_uri, overrides=overrides) as url:
            events = stream(url, json.dumps(ROW))
            assert requests.get(f"{url}/ping", timeout=10).status_code == 200
    deltas = [t for t, e in events if isinstance(e, dict) and e.get("type") == "response.output_text.delta"]
    errors = [(t, e["error"]) for t, e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and f"ran past {timeout_s} s" in errors[0][1], events[-3:]
    assert deltas and deltas[0] < errors[0][0]  # the answer had started streaming
    assert timeout_s <= errors[0][0] < timeout_s + 4  # cut at the timeout, well before the LM finished
    assert events[-1][1] == "[DONE]"
    assert not any(isinstance(e, dict) and e.get("custom_outputs") for _, e in events)
