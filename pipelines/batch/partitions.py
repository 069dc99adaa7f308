"""What runs inside a Spark task: load the model once per Python worker, score a batch, isolate bad rows.

`mlflow.pyfunc.spark_udf` calls `model.predict` on each Arrow batch, so one bad row (our model refuses
an empty text with a 400-style `MlflowException`) fails the task, and after Spark's retries the job.
Here the batch is scored in one `predict` call, and only a batch that fails is scored again row by row:
the bad rows get their message in `error`, the others their prediction. The retry costs little: our
model validates every row before any LM call, so a refused batch has spent nothing, and a batch that
failed mid-way on an LM error replays the rows it had answered from DSPy's cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

ERROR_CHARS = 2000  # an error message is for a human reading one row, not a traceback

# One loaded model per Python worker process. Spark reuses its Python workers between tasks
# (spark.python.worker.reuse, on by default), so the LM client and program are built once per worker.
_MODELS: dict[str, Any] = {}


def _load(model_dir: str, cache_dir: str | None):
    if model_dir not in _MODELS:
        import dspy
        import mlflow

        if cache_dir:  # the project's DSPy cache, as every other entry point uses it (it is multi-process safe)
            dspy.configure_cache(disk_cache_dir=cache_dir)
        _MODELS[model_dir] = mlflow.pyfunc.load_model(model_dir)
    return _MODELS[model_dir]


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {text}"[:ERROR_CHARS]


def predict_isolating(model, frame: pd.DataFrame, outputs: list[str]) -> tuple[pd.DataFrame, list[str | None]]:
    """Predictions for every row of `frame` and, per row, None or why it has none.

    The whole batch in one call first; if that raises, each row alone, so one bad row costs only itself.
    """
    try:
        predicted = model.predict(frame)
        return predicted.reset_index(drop=True)[outputs], [None] * len(frame)
    except Exception as batch_error:
        if len(frame) == 1:
            return pd.DataFrame({f: [None] for f in outputs}), [_message(batch_error)]
    rows: list[dict] = []
    errors: list[str | None] = []
    for i in range(len(frame)):
        try:
            rows.append(model.predict(frame.iloc[[i]]).iloc[0][outputs].to_dict())
            errors.append(None)
        except Exception as exc:
            rows.append(dict.fromkeys(outputs))
            errors.append(_message(exc))
    return pd.DataFrame(rows, columns=outputs), errors


def partition_scorer(
    model_file: str,
    cache_dir: str | None,
    inputs: list[str],
    outputs: dict[str, str],
    error_column: str,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The function `DataFrame.mapInPandas` runs: each batch comes back with `outputs` (model output ->
    result column) and `error_column` added, every input column kept.

    `model_file` is the name the model directory was shipped under with `SparkContext.addFile`, so the
    same code finds it on a cluster's executors and in local mode.
    """

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import SparkFiles

        model = _load(SparkFiles.get(model_file), cache_dir)
        for batch in batches:
            batch = batch.reset_index(drop=True)
            predicted, errors = predict_isolating(model, batch[inputs], list(outputs))
            for name, column in outputs.items():
                batch[column] = predicted[name].astype(object).where(predicted[name].notna(), None)
            batch[error_column] = pd.Series(errors, dtype=object)
            yield batch

    return score
