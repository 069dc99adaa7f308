"""The entry points against a real tracking server (PostgreSQL backend, proxied artifacts)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


def test_concurrent_runs_and_a_sweep_land_on_the_server(project, champion):
    client = MlflowClient(project.server.url)
    experiment = client.get_experiment_by_name("integration")
    runs = client.search_runs([experiment.experiment_id])
    by_entry: dict[str, list] = {}
    for run in runs:
        by_entry.setdefault(run.data.tags.get("entry_point"), []).append(run)
    # One plain train, a sweep's two jobs as children of its parent run, and the register run.
    trains = by_entry["train"]
    assert len(trains) == 3
    assert sum("mlflow.parentRunId" in r.data.tags for r in trains) == 2
    assert len(by_entry["register"]) == 1
    ours = [*trains, *by_entry["register"]]  # other tests add score runs, one of them killed on purpose
    assert {r.info.status for r in ours} == {"FINISHED"}
    # Artifacts go through the server (mlflow-artifacts:/), into its --artifacts-destination.
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in ours)
    single = next(r for r in trains if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("model_uri"))
    assert list(project.server.artifacts_dir.rglob(f"{single.info.run_id}/artifacts/config.yaml"))


def test_register_makes_a_champion_on_the_server(project, champion):
    # The registry URI is named too: an in-process test before this one may have set a global one.
    client = MlflowClient(tracking_uri=project.server.url, registry_uri=project.server.url)
    version = client.get_model_version_by_alias(champion, "champion")
    assert version.version == "1"
    assert client.get_run(version.run_id).info.status == "FINISHED"
