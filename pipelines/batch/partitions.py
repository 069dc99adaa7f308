"""What runs inside a Spark task: load the model once per Python worker, score a batch, isolate bad rows.

`mlflow.pyfunc.spark_udf` calls `model.predict` on each Arrow batch, so one bad row (our model refuses
an empty text with a 400-style `MlflowException`) fails the task, and after Spark's retries the job.
Here the batch is scored in one `predict` call, and only a batch that fails is scored again row by row:
the bad rows get their message in `error`, the others their prediction. The retry costs little: our
model validates every row before any LM call, so a refused batch has spent nothing, and a batch that
failed mid-way on an LM error replays the rows it had answered from DSPy's cache.

A row that fails because the LM is down or timed out (the model's 503/504 errors, after the LM's own
retries) is tried again `row_retries` times, waiting `retry_wait_s`, then 2x, 4x as long: an outage of
a minute costs those rows a delay, not a rerun. Any other failure is the row's and is not retried.

With guards in the model, each row's hits (`pii:redact EMAIL_ADDRESS; ...`) go to a `guard_hits` column,
so the job counts them per guard as evaluation does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

ERROR_CHARS = 2000  # an error message is for a human reading one row, not a traceback
# The statuses `pipelines.model.errors.serving_error` gives an LM that is down, rate-limited or timed out.
TRANSIENT = frozenset({"TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED"})


@dataclass(frozen=True)
class RowRetries:
    retries: int = 2
    wait_s: float = 5.0

    def __post_init__(self):
        if self.retries < 0 or self.wait_s < 0:
            raise ValueError(f"row_retries and retry_wait_s must be >= 0, got {self.retries} and {self.wait_s}")


@dataclass
class Scored:
    predicted: pd.DataFrame  # one column per model output
    errors: list[str | None]  # per row: None, or why it has no prediction
    guard_hits: list[str | None]  # per row: its guard hits, or None


DEFAULT_RETRIES = RowRetries()


# One loaded model per Python worker process. Spark reuses its Python workers between tasks
# (spark.python.worker.reuse, on by default), so the LM client and program are built once per worker.
_MODELS: dict[str, Any] = {}


def _load(model_dir: str, cache_dir: str | None):
    if model_dir not in _MODELS:
        import dspy
        import mlflow

        if cache_dir:  # the project's DSPy cache, as every other entry point uses it (it is multi-process safe)
            dspy.configure_cache(disk_cache_dir=cache_dir)
        # The model's own bounds (DSPy's memory cache, history), with the project's disk cache.
        config = {"cache_dir": cache_dir} if cache_dir else None
        _MODELS[model_dir] = mlflow.pyfunc.load_model(model_dir, model_config=config)
    return _MODELS[model_dir]


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {text}"[:ERROR_CHARS]


def transient(exc: BaseException) -> bool:
    return isinstance(exc, MlflowException) and exc.error_code in TRANSIENT


def _guard_hits(model, n: int) -> list[str | None]:
    """Per row of the model's last `predict` (on this thread), its guard hits; None for a model without."""
    unwrap = getattr(model, "unwrap_python_model", None)
    read = getattr(unwrap(), "last_guard_hits", None) if unwrap else None
    hits = read() if read else []
    return hits if len(hits) == n else [None] * n


def _predict_row(model, row: pd.DataFrame, outputs: list[str], retry: RowRetries, sleep) -> tuple[dict, str | None]:
    for attempt in range(retry.retries + 1):
        try:
            return model.predict(row).iloc[0][outputs].to_dict(), None
        except Exception as exc:
            if not transient(exc) or attempt == retry.retries:
                return dict.fromkeys(outputs), _message(exc)
            sleep(retry.wait_s * 2**attempt)
    raise AssertionError("unreachable")


def predict_isolating(
    model, frame: pd.DataFrame, outputs: list[str], retry: RowRetries = DEFAULT_RETRIES, sleep=time.sleep
) -> Scored:
    """Predictions for every row of `frame` and, per row, None or why it has none, and its guard hits.

    The whole batch in one call first; if that raises, each row alone, so one bad row costs only itself,
    and a row that met a transient LM failure is tried again (`retry`).
    """
    try:
        predicted = model.predict(frame)
        return Scored(predicted.reset_index(drop=True)[outputs], [None] * len(frame), _guard_hits(model, len(frame)))
    except Exception:
        pass
    rows: list[dict] = []
    errors: list[str | None] = []
    hits: list[str | None] = []
    for i in range(len(frame)):
        row, error = _predict_row(model, frame.iloc[[i]], outputs, retry, sleep)
        rows.append(row)
        errors.append(error)
        hits.append(None if error else _guard_hits(model, 1)[0])
    return Scored(pd.DataFrame(rows, columns=outputs), errors, hits)


def partition_scorer(
    model_file: str,
    cache_dir: str | None,
    inputs: list[str],
    outputs: dict[str, str],
    error_column: str,
    guard_column: str,
    retry: RowRetries = DEFAULT_RETRIES,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The function `DataFrame.mapInPandas` runs: each batch comes back with `outputs` (model output ->
    result column), `error_column` and `guard_column` added, every input column kept.

    `model_file` is the name the model directory was shipped under with `SparkContext.addFile`, so the
    same code finds it on a cluster's executors and in local mode.
    """

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import SparkFiles

        model = _load(SparkFiles.get(model_file), cache_dir)
        for batch in batches:
            batch = batch.reset_index(drop=True)
            scored = predict_isolating(model, batch[inputs], list(outputs), retry)
            for name, column in outputs.items():
                values = scored.predicted[name]
                batch[column] = values.astype(object).where(values.notna(), None)
            batch[error_column] = pd.Series(scored.errors, dtype=object)
            batch[guard_column] = pd.Series(scored.guard_hits, dtype=object)
            yield batch

    return score
