"""`serve`: run `mlflow models serve` for `models:/NAME@champion` (alias configurable).

    python -m pipelines.serve                      # models:/travel_intents@champion on 127.0.0.1:5001
    python -m pipelines.serve alias=challenger port=5002
    python -m pipelines.serve workers=4 timeout=30        # 4 uvicorn workers; a request past 30 s gets a 504

This is MLflow's own scoring server; the equivalent plain command is printed before it starts.
`--env-manager local` serves from this environment (the project's venv), with no download.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys

from omegaconf import DictConfig

from pipelines.cli import hydra_main

log = logging.getLogger(__name__)


def serve_command(cfg: DictConfig) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        str(cfg.model_uri),
        "--env-manager",
        "local",
        "-h",
        str(cfg.host),
        "-p",
        str(cfg.port),
        "--workers",
        str(cfg.workers),
        "--timeout",
        str(cfg.timeout),
    ]


def serve(cfg: DictConfig) -> None:
    """Replace this process with the MLflow scoring server (signals reach it directly)."""
    os.environ["MLFLOW_TRACKING_URI"] = str(cfg.tracking.uri)  # so models:/ resolves in our store
    # MLflow execs `uvicorn` by name: make this interpreter's bin dir (the venv) first on PATH.
    bin_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    cmd = serve_command(cfg)
    log.info("MLFLOW_TRACKING_URI=%s %s", cfg.tracking.uri, shlex.join(["mlflow", *cmd[3:]]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


@hydra_main("serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
