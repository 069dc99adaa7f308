"""The whole path with the REAL embedded model: train -> evaluate -> register -> serve over HTTP.

Small slices keep it to a couple of minutes on 2 cores; the scores are not asserted beyond being
logged and in range (a 0.5B model on 6 examples is noisy), but every prediction must be a valid label.
"""

from __future__ import annotations

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from pipelines.main import run_main
from tests.helpers import serving_champion

pytestmark = pytest.mark.slow

LABELS = {
    "book_flight",
    "cancel_booking",
    "flight_status",
    "baggage_policy",
    "change_seat",
    "refund_request",
    "lost_luggage",
    "check_in",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import compose_cfg, reset_mlflow_state

    reset_mlflow_state()
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = compose_cfg(
        "main",
        tmp,
        [
            "optimizer=labeled_fewshot",
            "optimizer.compiler.k=4",
            "task.data.train_size=8",
            "task.data.val_size=2",
            "task.data.dev_size=6",
            "task.data.test_size=6",
        ],
        fake=False,
    )
    train_res, test_res, reg_res = run_main(cfg)
    yield cfg, train_res, test_res, reg_res
    while mlflow.active_run():
        mlflow.end_run()


def test_scores_runs_and_traces_are_logged(trained):
    cfg, train_res, test_res, reg_res = trained
    client = MlflowClient()
    for run_id in (train_res.run_id, test_res.run_id, reg_res.run_id):
        assert client.get_run(run_id).info.status == "FINISHED"
    train_metrics = client.get_run(train_res.run_id).data.metrics
    assert 0.0 <= train_metrics["score/dev"] <= 1.0
    assert train_metrics["dev/lm_calls"] > 0 and train_metrics["dev/input_tokens"] > 0
    assert train_metrics["dev/cost_usd"] == 0.0
    assert "score/test" in client.get_run(test_res.run_id).data.metrics
    assert set(test_res.outcome.table["predicted.label"]) <= LABELS
    # Each evaluation example left a trace with the metric attached as an assessment.
    experiment = client.get_run(test_res.run_id).info.experiment_id
    traces = mlflow.search_traces(locations=[experiment], run_id=test_res.run_id, return_type="list")
    assert len(traces) >= len(test_res.outcome.table)
    names = {a.name for t in traces for a in t.info.assessments}
    assert "exact_match" in names
    assert reg_res.promoted
    assert client.get_model_version_by_alias(cfg.registry.name, "champion")


def test_served_champion_answers_and_survives_bad_requests(trained):
    cfg = trained[0]
    with serving_champion(cfg.tracking.uri) as url:
        inv = f"{url}/invocations"
        one = requests.post(inv, json={"dataframe_records": [{"text": "my suitcase never arrived"}]}, timeout=120)
        assert one.status_code == 200, one.text
        assert len(one.json()["predictions"]) == 1
        texts = ["I want a refund for my cancelled flight", "can I pick a window seat?", "is LH 903 delayed?"]
        split = requests.post(
            inv, json={"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}, timeout=120
        )
        assert split.status_code == 200, split.text
        preds = split.json()["predictions"]
        assert len(preds) == 3 and {p["label"] for p in preds} <= LABELS
        inputs = requests.post(inv, json={"inputs": {"text": texts[:2]}}, timeout=120)
        assert inputs.status_code == 200 and len(inputs.json()["predictions"]) == 2

        bad = [
            ("{not json", {"Content-Type": "application/json"}),
            ('{"dataframe_records": [{"txt": "x"}]}', {"Content-Type": "application/json"}),
            ('{"dataframe_records": [{"text": null}]}', {"Content-Type": "application/json"}),
            ('{"dataframe_records": [{"text": "   "}]}', {"Content-Type": "application/json"}),
            ('{"dataframe_records": []}', {"Content-Type": "application/json"}),
            ("hello", {"Content-Type": "text/plain"}),
        ]
        for body, headers in bad:
            r = requests.post(inv, data=body, headers=headers, timeout=60)
            assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
            assert r.text  # a message, not an empty error
        # Still serving after the bad requests.
        assert requests.get(f"{url}/ping", timeout=5).status_code == 200
        again = requests.post(inv, json={"dataframe_records": [{"text": "cancel booking X7K2QP"}]}, timeout=120)
        assert again.status_code == 200 and again.json()["predictions"][0]["label"] in LABELS
