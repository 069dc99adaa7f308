"""Runs that log the same data at the same moment, on the PostgreSQL server: all of them keep their lineage.

The store looks a dataset up and inserts it if absent in two steps, so runs logging one split at once
can all miss it and all insert it; all but one then hit the datasets table's key. Each run must still end
with its four splits linked (the loser retries and finds the winner's row)."""

from __future__ import annotations

import threading

import mlflow
from mlflow import MlflowClient

from pipelines.config import PROJECT_ROOT
from pipelines.data.splits import SPLITS, load_splits

RUNS = 8


def test_runs_logging_the_same_splits_at_once_all_keep_their_lineage(tracking_server):
    sizes = {f"{split}_size": 16 for split in SPLITS}
    data = str(PROJECT_ROOT / "data/travel_intents/intents.csv")
    splits = load_splits(data, inputs=["text"], outputs=["label"], label_fields=["label"], name="race", **sizes)
    mlflow.set_tracking_uri(tracking_server.url)
    try:
        experiment_id = mlflow.create_experiment("lineage-race")
        start = threading.Barrier(RUNS)
        errors: list[BaseException] = []
        run_ids: list[str] = []

        def one_run():
            with mlflow.start_run(experiment_id=experiment_id) as run:  # the active run is per thread
                run_ids.append(run.info.run_id)
                start.wait()
                try:
                    splits.log_to_mlflow()
                except BaseException as exc:  # noqa: BLE001 (collected and asserted below)
                    errors.append(exc)

        threads = [threading.Thread(target=one_run) for _ in range(RUNS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        client = MlflowClient()
        for run_id in run_ids:
            names = {i.dataset.name for i in client.get_run(run_id).inputs.dataset_inputs}
            assert names == {f"race-{s}" for s in SPLITS}, run_id
    finally:
        mlflow.set_tracking_uri(None)
