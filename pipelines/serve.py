"""`serve`: MLflow's scoring server for `models:/NAME@champion` (alias configurable), a convenience.

    python -m pipelines.serve                      # models:/travel_intents@champion on 127.0.0.1:5001
    python -m pipelines.serve alias=challenger port=5002
    python -m pipelines.serve workers=4 timeout=30        # 4 uvicorn workers; a request past 30 s gets a 504
    python -m pipelines.serve concurrency=16              # rows of one request in flight at once (provider LMs)
    python -m pipelines.serve max_rows=200                # override one of the model's own bounds
    python -m pipelines.serve stream=true                 # MLflow's agent server: /responses, Server-Sent Events
    python -m pipelines.serve lm_engine=litellm           # a provider LM through LiteLLM (default auto: DSPy picks)

Without `stream`, this is MLflow's own scoring server app (`/invocations`, tables of rows), the one
`mlflow models serve` runs, behind `pipelines.serving.scoring_app.RequestGuard`: a 4xx, not MLflow's 500, for a
request without a Content-Type or with absurdly nested JSON. With `stream=true`, MLflow's agent server around
the same registered program (`pipelines.serving.agent_server`: the Responses API, one row per request, answers
streamed token by token).

The model carries its own bounds (rows per request, deadline, threads, DSPy's cache and history:
`pipelines.model.limits`), so plain `mlflow models serve -m models:/NAME@champion --env-manager local` serves it
the same way; the equivalent plain command is printed before the server starts. A bound given here
(`max_rows=...`; null: the model's own) overrides the model's through its `PIPELINES_SERVE_<NAME>` variable.

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
from pipelines.model.limits import PREFIX, SERVER_TIMEOUT_ENV, ServingLimits
from pipelines.model.lm_engine import ENV as LM_ENGINE_ENV
from pipelines.model.lm_engine import checked_engine
from pipelines.serving.event_loop import LOOP_ENV, loop_factory
from pipelines.serving.scoring_app import MODEL_ENV

# `serve` settings that override one of the model's bounds (`ServingLimits`) when not null.
BOUNDS = ("max_rows", "concurrency", "request_threads", "row_threads", "memory_cache_entries", "history_size")

log = logging.getLogger(__name__)


def serve_command(cfg: DictConfig) -> list[str]:
    """uvicorn on MLflow's agent server (stream=true) or on MLflow's scoring app behind our request guard."""
    app = "pipelines.serving.agent_server:create_app" if cfg.stream else "pipelines.serving.scoring_app:create_app"
    where = ["--host", str(cfg.host), "--port", str(cfg.port), "--workers", str(cfg.workers)]
    return [sys.executable, "-m", "uvicorn", "--factory", app, *where]


def plain_command(cfg: DictConfig) -> list[str]:
    """The same server without this launcher: MLflow's own command (the model brings its bounds along)."""
    return [
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
    env = {"MLFLOW_TRACKING_URI": str(cfg.tracking.uri)}
    # TCP_NODELAY with several workers (`pipelines.serving.event_loop`), and the agent server's request threads.
    env[LOOP_ENV] = f"{loop_factory.__module__}:{loop_factory.__name__}"
    if cfg.lm_engine is not None:  # refused here, before the server starts; none: the registered engine
        env[LM_ENGINE_ENV] = checked_engine(cfg.lm_engine) or "none"
    overrides = {name: cfg[name] for name in BOUNDS if cfg.get(name) is not None}
    if cfg.get("cache_dir") is not None:
        overrides["cache_dir"] = str(cfg.cache_dir)
    ServingLimits.from_config(overrides)  # refused here, before the server starts
    env |= {f"{PREFIX}{name.upper()}": str(value) for name, value in overrides.items()}
    env[MODEL_ENV] = str(cfg.model_uri)
    if cfg.stream:
        from pipelines.serving.agent_server import TIMEOUT_ENV, TRACE_ENV

        env |= {
            TIMEOUT_ENV: str(cfg.timeout),
            TRACE_ENV: str(bool(cfg.trace)).lower(),
            "MLFLOW_EXPERIMENT_NAME": str(cfg.tracking.experiment),
        }
    else:
        # MLflow's scoring server reads its timeout here (`mlflow models serve --timeout` sets the same variable).
        env[SERVER_TIMEOUT_ENV] = str(cfg.timeout)
    return env


def serve(cfg: DictConfig) -> None:
    """Replace this process with the server (signals reach it directly)."""
    env = serve_environment(cfg)
    os.environ.update(env)
    cmd = serve_command(cfg)
    shown = cmd[3:] if cfg.stream else plain_command(cfg)
    if not cfg.stream:
        log.info("the plain equivalent (without the request guard): %s", shlex.join(shown))
    log.info("%s %s", " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(cmd[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


@hydra_main("serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
