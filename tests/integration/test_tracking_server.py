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
    # On the server traces go by MLflow's background export (`tracking=server`): the run ended with every
    # example's trace stored, each with its one score.
    traces = client.search_traces(locations=[experiment.experiment_id], run_id=single.info.run_id, max_results=500)
    examples = [t for t in traces if any(s.name == "example" and s.parent_id is None for s in t.data.spans)]
    assert len(examples) >= single.data.metrics["dev/examples"] == 16
    assert all([a.name for a in t.info.assessments].count("exact_match") == 1 for t in examples)


def test_register_makes_a_champion_on_the_server(project, champion):
    # The registry URI is named too: an in-process test before this one may have set a global one.
    client = MlflowClient(tracking_uri=project.server.url, registry_uri=project.server.url)
    version = client.get_model_version_by_alias(champion, "champion")
    assert version.version == "1"
    assert client.get_run(version.run_id).info.status == "FINISHED"
