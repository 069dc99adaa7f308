"""`serve`: run `mlflow models serve` for `models:/NAME@champion` (alias configurable).

    python -m pipelines.serve                      # models:/travel_intents@champion on 127.0.0.1:5001
    python -m pipelines.serve alias=challenger port=5002
    python -m pipelines.serve workers=4 timeout=30        # 4 uvicorn workers; a request past 30 s gets a 504
    python -m pipelines.serve concurrency=16              # rows of one request in flight at once (provider LMs)
    python -m pipelines.serve stream=true                 # MLflow's agent server: /responses, Server-Sent Events
    python -m pipelines.serve lm_engine=litellm           # a provider LM through LiteLLM (default auto: DSPy picks)

Without `stream`, this is MLflow's own scoring server (`/invocations`, tables of rows); with `stream=true`,
MLflow's agent server around the same registered program (`pipelines.serving.agent_server`: the Responses
API, one row per request, answers streamed token by token). The equivalent plain command is printed before
it starts. `--env-manager local` serves from this environment (the project's venv), with no download.

A request's rows share its `timeout`: thousands of rows belong to the batch scorer, `python -m pipelines.score`
(resumable, on Spark), not to one HTTP request.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys

from omegaconf import DictConfig

from pipelines.cli import hydra_main
from pipelines.model.limits import ServingLimits
from pipelines.model.lm_engine import ENV as LM_ENGINE_ENV
from pipelines.model.lm_engine import checked_engine
from pipelines.model.row_runner import CONCURRENCY_ENV
from pipelines.serving.event_loop import LOOP_ENV, THREADS_ENV, checked_threads, loop_factory

log = logging.getLogger(__name__)


def serve_command(cfg: DictConfig) -> list[str]:
    if cfg.stream:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "pipelines.serving.agent_server:create_app",
            "--host",
            str(cfg.host),
            "--port",
            str(cfg.port),
            "--workers",
            str(cfg.workers),
        ]
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


def serve_environment(cfg: DictConfig) -> dict[str, str]:
    """What the server process reads: the store (models:/ resolves there, traces go there) and our settings."""
    env = {"MLFLOW_TRACKING_URI": str(cfg.tracking.uri), CONCURRENCY_ENV: str(cfg.concurrency)}
    # Both servers' loop: a default executor of `request_threads` (MLflow's scoring server answers each request
    # on it; the agent server each row) and TCP_NODELAY with several workers (`pipelines.serving.event_loop`).
    threads = checked_threads(cfg.request_threads)  # refused here, before the server starts
    env |= {LOOP_ENV: f"{loop_factory.__module__}:{loop_factory.__name__}", THREADS_ENV: str(threads)}
    if engine := checked_engine(cfg.lm_engine):  # refused here, before the server starts
        env[LM_ENGINE_ENV] = engine
    limits = ServingLimits(
        max_rows=int(cfg.max_rows) if cfg.max_rows else None,
        cache_dir=str(cfg.paths.dspy_cache_dir),
        memory_cache_entries=int(cfg.memory_cache_entries),
        history_size=int(cfg.history_size),
    )
    env |= limits.environment()
    if cfg.stream:
        from pipelines.serving.agent_server import MODEL_ENV, TIMEOUT_ENV, TRACE_ENV

        env |= {
            MODEL_ENV: str(cfg.model_uri),
            TIMEOUT_ENV: str(cfg.timeout),
            TRACE_ENV: str(bool(cfg.trace)).lower(),
            "MLFLOW_EXPERIMENT_NAME": str(cfg.tracking.experiment),
        }
    return env


def serve(cfg: DictConfig) -> None:
    """Replace this process with the server (signals reach it directly)."""
    env = serve_environment(cfg)
    os.environ.update(env)
    # MLflow execs `uvicorn` by name: make this interpreter's bin dir (the venv) first on PATH.
    bin_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    cmd = serve_command(cfg)
    shown = cmd[3:] if cfg.stream else ["mlflow", *cmd[3:]]
    log.info("%s %s", " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(shown))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


@hydra_main("serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
