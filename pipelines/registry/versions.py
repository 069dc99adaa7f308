"""Model registry helpers: find a run's model, register it, read scores, load a program back.

Scores are cached on model versions as tags `eval.<split>.score` / `eval.<split>.digest`, so a champion
scored once on a split is not re-scored for every challenger while the split's data stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dspy
import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

MODEL_ENTRY_POINTS = ("train", "optimize")


class RegistryError(LookupError):
    pass


@dataclass
class LoadedProgram:
    uri: str
    program: dspy.Module
    lm: dspy.LM
    adapter: object | None
    spec: dict = field(default_factory=dict)  # the model's spec.json: contract, task settings, configs
    version: ModelVersion | None = None
    model_id: str | None = None  # the logged model's id (MLflow 3): scores are logged against it

    def version_tags(self) -> dict[str, str]:
        if self.version is None:
            return {}
        return {"model_name": self.version.name, "model_version": str(self.version.version)}


def resolve_version(uri: str) -> ModelVersion | None:
    """The ModelVersion behind `models:/NAME@alias` or `models:/NAME/3`.

    None for URIs that name no registered version: `runs:/...` and MLflow 3's logged-model URIs
    (`models:/m-<id>`).
    """
    if not uri.startswith("models:/"):
        return None
    path = uri[len("models:/") :]
    client = MlflowClient()
    if "@" in path:
        name, alias = path.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    if "/" in path:
        name, version = path.split("/", 1)
        return client.get_model_version(name, version)
    return None


def load_program(uri: str) -> LoadedProgram:
    """Load a model logged by `pipelines.model` and hand back its DSPy program, LM and adapter."""
    try:
        version = resolve_version(uri)
    except MlflowException as exc:
        raise RegistryError(f"No model at {uri}: {exc.message}") from exc
    # This process (training, evaluation) keeps its own DSPy settings: not the served model's bounds.
    pyfunc_model = mlflow.pyfunc.load_model(uri, model_config={"configure_process": False})
    model = pyfunc_model.unwrap_python_model()
    return LoadedProgram(
        uri=uri,
        program=model.program,
        lm=model.lm,
        adapter=model.adapter,
        spec=model.spec,
        version=version,
        model_id=pyfunc_model.metadata.model_id,
    )


def latest_model_run(experiment_id: str, task: str | None = None) -> Run:
    """The most recent FINISHED train/optimize run of the experiment that logged a model."""
    # MLflow's filter language has no IN for tags: filter on the entry point here.
    query = "attributes.status = 'FINISHED' AND tags.model_uri != ''"
    if task:
        query += f" AND tags.task = '{task}'"
    runs = MlflowClient().search_runs(
        [experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=50
    )
    for run in runs:
        if run.data.tags.get("entry_point") in MODEL_ENTRY_POINTS:
            return run
    raise RegistryError(
        f"No finished train/optimize run with a model in experiment {experiment_id}"
        + (f" for task {task!r}" if task else "")
        + ". Run `python -m pipelines.train` first, or pass run_id=..."
    )


def get_alias(name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None when the model or the alias does not exist. Any other registry
    error (a server down, a permission refused) is raised: it must never read as "no champion"."""
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def existing_version(name: str, run_id: str, model_uri: str) -> ModelVersion | None:
    """The version of `name` already registered from this run's model, if any (registering twice reuses it)."""
    try:
        versions = MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    for version in sorted(versions, key=lambda v: int(v.version)):
        if (version.tags or {}).get("source_model_uri", model_uri) == model_uri:
            return version
    return None


def _load_table(run_id: str, path: str) -> pd.DataFrame | None:
    try:
        table = mlflow.load_table(path, run_ids=[run_id])
    except MlflowException:
        return None
    return table.drop(columns=["run_id"], errors="ignore")


def recorded_predictions(
    version: ModelVersion | None, run_id: str | None, split: str, digest: str
) -> pd.DataFrame | None:
    """Per-example results of a model on exactly this split's data, if any run recorded them.

    Looks at a table a previous `register` run attached to the version (tags `eval.<split>.*`), then at
    the table the run that produced the model logged (`eval/<split>_predictions.json`).
    """
    tags = (version.tags or {}) if version is not None else {}
    if tags.get(f"eval.{split}.digest") == digest and f"eval.{split}.table_run" in tags:
        table = _load_table(tags[f"eval.{split}.table_run"], tags[f"eval.{split}.table"])
        if table is not None:
            return table
    run_id = run_id or (version.run_id if version is not None else None)
    if run_id:
        run = MlflowClient().get_run(run_id)
        if run.data.tags.get(f"data.digest.{split}") == digest:
            return _load_table(run_id, f"eval/{split}_predictions.json")
    return None


def record_predictions(version: ModelVersion, split: str, digest: str, run_id: str, path: str, score: float) -> None:
    """Point the version at a table of its results on this split (so the next comparison reuses it)."""
    client = MlflowClient()
    for key, value in {"digest": digest, "table_run": run_id, "table": path, "score": f"{score:.6f}"}.items():
        client.set_model_version_tag(version.name, version.version, f"eval.{split}.{key}", value)


def source_run_id(model_uri: str) -> str | None:
    """The run that logged the model behind `runs:/ID/...`, `models:/NAME@alias`, `models:/NAME/N`, `models:/m-ID`."""
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/") :].split("/", 1)[0]
    version = resolve_version(model_uri)
    if version is not None:
        return version.run_id
    if model_uri.startswith("models:/m-"):
        return MlflowClient().get_logged_model(model_uri[len("models:/") :].split("/", 1)[0]).source_run_id
    return None
