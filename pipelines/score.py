"""`score`: batch-score a table with a registered model on Spark, resumably, as one MLflow run.

    python -m pipelines.score input=messages.csv output=scored/               # the champion, local[*]
    python -m pipelines.score model_uri=models:/travel_intents/3 input=in.parquet output=out/ spark.cores=2
    python -m pipelines.score input=in.jsonl output=out/ 'spark.master="spark://head:7077"' \
        +spark.conf.spark.executor.memory=4g                                  # any Spark setting, by its name

Rerun the same command after a crash: rows already written are skipped. The run records the model
version it resolved, rows in/skipped/scored/with errors, rows/s, and progress per chunk.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from pipelines.batch import Chunk, RowRetries, ScoreResult, resolve_model, score_file, spark_session
from pipelines.cli import hydra_main
from pipelines.config import flatten, to_container
from pipelines.tracking.run_lifecycle import run_tags, started_run
from pipelines.tracking.store import configure_tracking

log = logging.getLogger(__name__)
SETTINGS = (
    "model_uri",
    "input",
    "input_format",
    "output",
    "chunk_rows",
    "allow_mixed_versions",
    "row_retries",
    "retry_wait_s",
    "spark",
)


def _absolute(path: str) -> str:
    """Local paths as absolute ones (recorded on the run, and the same for Spark whatever its cwd)."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _log_chunk(chunk: Chunk) -> None:
    rate = chunk.rows / chunk.seconds if chunk.seconds else 0.0
    mlflow.log_metrics(
        {"chunk_rows": chunk.rows, "chunk_errors": chunk.errors, "chunk_rows_per_s": rate}, step=chunk.index
    )


def score(cfg: DictConfig) -> ScoreResult:
    configure_tracking(cfg.tracking)
    retry = RowRetries(int(cfg.row_retries), float(cfg.retry_wait_s))  # a bad value fails before Spark starts
    model_uri, version = resolve_model(str(cfg.model_uri))
    settings = {k: v for k, v in to_container(cfg).items() if k in SETTINGS}
    tags = run_tags("score") | {"model_uri": str(cfg.model_uri), "scored_with": model_uri}
    if version is not None:
        tags |= {"model_name": version.name, "model_version": str(version.version)}
    # Built before the run starts, so the run's duration is the job's, not the JVM's start.
    spark = spark_session(cfg.spark.master, conf=flatten(to_container(cfg.spark.conf)))
    try:
        with started_run(cfg.tracking, cfg.run_name or f"score-{model_uri.split('/', 1)[-1]}", tags, settings):
            result = score_file(
                spark,
                model_uri,
                _absolute(str(cfg.input)),
                _absolute(str(cfg.output)),
                input_format_name=cfg.input_format,
                chunk_rows=cfg.chunk_rows,
                cache_dir=str(cfg.paths.dspy_cache_dir),
                allow_mixed_versions=cfg.allow_mixed_versions,
                retry=retry,
                on_chunk=_log_chunk,
            )
            mlflow.log_metrics(result.metrics())
    finally:
        spark.stop()
    return result


@hydra_main("score")
def main(cfg: DictConfig) -> float:
    return score(cfg).rows_per_s


if __name__ == "__main__":
    main()
