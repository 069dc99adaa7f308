"""A served model's bounds: saved with the model, applied wherever it loads, overridable by an operator.

The bounds travel in the model's MLflow `model_config` (written by `log_program_model`, read back in
`load_context` as `context.model_config`), so `mlflow models serve`, its Docker image, `spark_udf` and
`mlflow.pyfunc.load_model` all run the model the same way; `python -m pipelines.serve` only overrides.
Later sources win:

    the model's own defaults (`ServingLimits()`, saved at log time)
    < `mlflow.pyfunc.load_model(uri, model_config={...})` or MLflow's `MLFLOW_PYFUNC_INFERENCE_CONFIG` (JSON)
    < one variable per bound: `PIPELINES_SERVE_<NAME>` (`PIPELINES_SERVE_MAX_ROWS=200`; `none` clears a bound)

Per request (in a scoring server only: a Spark batch or a notebook call has neither bound):
- `max_rows`: rows per request; more is a 400 that points at the batch scorer (`python -m pipelines.score`).
- `request_timeout`: seconds a request may take; the scoring server's own timeout (`mlflow models serve -t`,
  `MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT`) when that is shorter. Past it the request is a 504, its rows not
  yet started never start, and each LM call waits at most this long per attempt, retried only while a
  retry can still finish in time (`pipelines.model.row_runner`).
- `concurrency`: rows of one request in flight at once with a provider LM (the embedded model: its
  `n_contexts`, whatever this says).

Per process, once the model has loaded:
- `row_threads`: the model's own threads for rows, shared by all requests: a hung LM call holds one of these,
  never one of the server's request threads past the request's deadline.
- `request_threads`: in MLflow's scoring server, the threads its requests run on (MLflow's own: min(32, cores + 4),
  6 on two cores, so 6 slow or hung requests held every thread): `pipelines.model.server_threads`.
- `cache_dir`: DSPy's disk cache; a relative path is under the working directory the model loads in (the
  server's working area), never `~/.dspy_cache`; `none`: memory only.
- `memory_cache_entries`, `history_size`: DSPy's in-memory cache (1,000,000 entries by default) and each
  LM's call history (10,000) stay bounded, so a long-running server's memory stays flat.
- `freeze_heap`: in a scoring server, `gc.freeze()` once loaded: the objects DSPy, LiteLLM, MLflow and pandas
  leave at import are never scanned again by a full collection (each held the GIL for a long pause under load;
  `python -m benchmarks.speed only=[serving]` measures it).
- `lm_engine`: in a scoring server, the DSPy engine a provider LM calls through (`pipelines.model.lm_engine`:
  `auto`, DSPy's own choice, by default; `none`: the registered one, LiteLLM for models trained here).
- `configure_process`: false leaves the process's DSPy settings and heap alone (the project's own training
  process loads models with false: its DSPy cache is the project's).
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import dspy

from pipelines.model.lm_engine import AUTO, checked_engine

log = logging.getLogger(__name__)
PREFIX = "PIPELINES_SERVE_"
# Set by `mlflow models serve` (and so its Docker image) for the scoring server it starts: the mark that
# this process is one, and the server's own per-request timeout.
SERVER_TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"
_NONE = {"none", "null"}


@dataclass(frozen=True)
class ServingLimits:
    max_rows: int | None = 1000
    request_timeout: float | None = 60.0
    concurrency: int = 16
    row_threads: int = 64
    request_threads: int = 64
    cache_dir: str | None = ".dspy_cache"
    memory_cache_entries: int = 10_000
    history_size: int = 100
    freeze_heap: bool = True
    configure_process: bool = True
    lm_engine: str | None = AUTO

    def __post_init__(self):
        for name in ("concurrency", "row_threads", "request_threads", "memory_cache_entries", "history_size"):
            if getattr(self, name) is None or int(getattr(self, name)) < 1:
                raise ValueError(f"serving bound {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("max_rows", "request_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"serving bound {name} must be positive or none, got {value!r}")

        checked_engine(self.lm_engine)

    def model_config(self) -> dict[str, Any]:
        """What `log_model(model_config=...)` saves: every bound, so each can be overridden at load."""
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> ServingLimits:
        """The bounds in a loaded model's `context.model_config`; keys that are not bounds are ignored."""
        if config is None:  # logged before the bounds: only a scoring server is configured, as `serve` did
            return cls(configure_process=in_scoring_server())
        names = {f.name for f in fields(cls)}
        return cls(**{k: _typed(k, v) for k, v in config.items() if k in names})

    def with_environment(self, env=os.environ) -> ServingLimits:
        """These bounds with every `PIPELINES_SERVE_<NAME>` variable that is set (non-empty) applied."""
        overrides = {}
        for f in fields(self):
            value = env.get(f"{PREFIX}{f.name.upper()}", "")
            if value != "":
                overrides[f.name] = _typed(f.name, value)
        return replace(self, **overrides) if overrides else self

    def apply(self) -> None:
        """Process-wide settings, once the model has loaded: DSPy's cache and history, and in a scoring server
        a frozen heap (see the module docstring). The request threads: `ServerThreads`."""
        if not self.configure_process:
            return
        self.apply_to_dspy()
        if in_scoring_server():  # a process the model owns, not a notebook's or a test's
            self.freeze()

    def freeze(self) -> None:
        """Freeze the loaded heap (`freeze_heap`): a server calls this once the model has loaded."""
        if self.freeze_heap and self.configure_process:
            gc.collect()  # what is garbage now is not frozen with the rest
            gc.freeze()

    def apply_to_dspy(self) -> None:
        cache_dir = self.resolved_cache_dir()
        dspy.configure_cache(
            enable_disk_cache=cache_dir is not None,
            disk_cache_dir=cache_dir or "",
            memory_max_entries=self.memory_cache_entries,
        )
        dspy.configure(max_history_size=self.history_size)

    def resolved_cache_dir(self) -> str | None:
        if self.cache_dir is None:
            return None
        path = Path(self.cache_dir)
        return str(path if path.is_absolute() else Path.cwd() / path)

    def check_rows(self, n: int) -> str | None:
        """Why a request of `n` rows is refused, or None."""
        if self.max_rows is not None and n > self.max_rows and in_scoring_server():
            return (
                f"{n} rows in one request; this server takes at most {self.max_rows} "
                f"({PREFIX}MAX_ROWS, or the model's max_rows). "
                "Score large tables with the batch scorer: python -m pipelines.score input=... output=..."
            )
        return None

    def request_seconds(self, env=os.environ) -> float | None:
        """A request's time in this process: the shorter of `request_timeout` and the scoring server's own
        timeout; None outside a scoring server (batch scoring, a notebook: no deadline)."""
        server = env.get(SERVER_TIMEOUT_ENV)
        if not server:
            return None
        bounds = [float(server), *([self.request_timeout] if self.request_timeout else [])]
        return min(bounds)


def in_scoring_server(env=os.environ) -> bool:
    return bool(env.get(SERVER_TIMEOUT_ENV))


def _typed(name: str, value: Any) -> Any:
    """A bound's value from the model config (typed) or a variable (a string), as its field's type."""
    if isinstance(value, str):
        value = value.strip()
        if value.lower() in _NONE:
            value = None
    if value is None:
        return None
    if name in ("freeze_heap", "configure_process"):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
    if name in ("cache_dir", "lm_engine"):
        return str(value)
    if name == "request_timeout":
        return float(value)
    return int(value)
