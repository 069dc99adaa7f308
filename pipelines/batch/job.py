"""Score a table with a logged or registered model on Spark, resumably: `score_file`.

    spark = spark_session("local[2]")
    result = score_file(spark, "models:/travel_intents/3", "messages.csv", "scored/")
    result.rows_scored, result.rows_errors, result.rows_per_s

The output is a Parquet dataset: every input column, `row_id`, one `predicted_<field>` per model output,
`error` (null, or why the row has no prediction), `guard_hits` (null, or the guards that fired on the row)
and `scored_with` (the model version that scored it).

Work is cut into chunks of about `chunk_rows` rows, picked by row id, and each chunk is one Spark job
that appends to `output`. A job commits its files only when it succeeds, so a crash loses at most the
chunk in flight, and a rerun scores only the rows whose id is not in `output` yet.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import Model
from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from pipelines.batch.partitions import DEFAULT_RETRIES, RowRetries, partition_scorer
from pipelines.batch.row_results import (
    ERROR,
    GUARD_HITS,
    PREDICTION_PREFIX,
    ROW_ID,
    SCORED_WITH,
    check_names,
    input_format,
    read_input,
    row_id,
    written,
)
from pipelines.registry.versions import resolve_version

log = logging.getLogger(__name__)
CHUNK = "_chunk"


@dataclass
class Chunk:
    index: int
    of: int
    rows: int
    errors: int
    seconds: float
    guard_hits: dict[str, int] = field(default_factory=dict)  # guard name -> rows it fired on


@dataclass
class ScoreResult:
    scored_with: str  # the concrete model: models:/NAME/VERSION, or the URI given when it names no version
    output: str
    rows_input: int = 0
    rows_already_written: int = 0  # skipped: committed by an earlier run
    rows_scored: int = 0
    rows_errors: int = 0
    scoring_s: float = 0.0  # the chunks' Spark jobs only: no session start, no model download
    parallelism: int = 1
    chunks: list[Chunk] = field(default_factory=list)
    guard_hits: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows_scored / self.scoring_s if self.scoring_s else 0.0

    def metrics(self) -> dict[str, float]:
        return {
            "rows_input": self.rows_input,
            "rows_already_written": self.rows_already_written,
            "rows_scored": self.rows_scored,
            "rows_errors": self.rows_errors,
            "rows_per_s": self.rows_per_s,
            "scoring_s": self.scoring_s,
            "chunks": len(self.chunks),
            "parallelism": self.parallelism,
        } | {f"guard/{name}/hits": n for name, n in self.guard_hits.items()}  # as evaluation names them


def resolve_model(model_uri: str) -> tuple[str, ModelVersion | None]:
    """`models:/NAME@alias` -> `models:/NAME/VERSION`, fixed for the whole job: an alias that moves
    mid-way (a `register` promoting a new champion) must not mix two models in one output."""
    version = resolve_version(model_uri)
    return (f"models:/{version.name}/{version.version}", version) if version else (model_uri, None)


def _download(model_uri: str, into: str) -> str:
    """The model as a local directory with a name unique to this job (Spark refuses to ship two
    different directories under one name in the same session)."""
    target = Path(into) / f"model-{uuid.uuid4().hex[:12]}"
    target.mkdir()
    return mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target))


def score_file(
    spark: SparkSession,
    model_uri: str,
    input_path: str,
    output: str,
    *,
    input_format_name: str | None = None,
    chunk_rows: int = 10_000,
    cache_dir: str | None = None,
    allow_mixed_versions: bool = False,
    retry: RowRetries = DEFAULT_RETRIES,
    on_chunk: Callable[[Chunk], None] | None = None,
) -> ScoreResult:
    """Score every row of `input_path` (CSV with a header, Parquet, JSONL) not yet in `output`."""
    scored_with, _ = resolve_model(model_uri)
    parallelism = spark.sparkContext.defaultParallelism
    result = ScoreResult(scored_with=scored_with, output=output, parallelism=parallelism)
    with tempfile.TemporaryDirectory(prefix="score-") as tmp:
        model_dir = _download(scored_with, tmp)
        signature = Model.load(model_dir).signature
        if signature is None or signature.outputs is None:
            raise ValueError(f"{model_uri} has no signature: scoring needs its input and output columns")
        in_types = {c.name: c.type.to_spark() for c in signature.inputs.inputs}
        out_types = {c.name: c.type.to_spark() for c in signature.outputs.inputs}
        table = read_input(spark, input_path, input_format(input_path, input_format_name), in_types)
        check_names(table.columns, list(out_types))
        rows = table.withColumn(ROW_ID, row_id(table.columns))
        pending = rows
        done = written(spark, output)
        if done is not None:
            others = [r[0] for r in done.select(SCORED_WITH).distinct().collect() if r[0] != scored_with]
            if others and not allow_mixed_versions:
                raise ValueError(
                    f"{output} holds rows scored with {others}, not {scored_with}: write to a new output, "
                    "or pass allow_mixed_versions=true (each row records its model in `scored_with`)"
                )
            pending = rows.join(done.select(ROW_ID).distinct(), ROW_ID, "left_anti")
        result.rows_input = rows.count()
        # Materialised, and cut loose from `output`: a write to a path makes Spark drop every cached plan
        # that reads it, so a plan still reading `output` would be recomputed after each chunk, see the
        # chunk it just wrote as done, and count it as nothing. Each chunk now filters these rows. (Spark
        # frees the checkpointed blocks once this plan is garbage collected.)
        pending = pending.localCheckpoint(eager=True)
        todo = pending.count()
        result.rows_already_written = result.rows_input - todo
        n_chunks = max(1, math.ceil(todo / chunk_rows))
        log.info(
            "%d rows in %s, %d already written; scoring %d",
            result.rows_input,
            input_path,
            result.rows_already_written,
            todo,
        )
        if todo:
            plan = pending.withColumn(CHUNK, F.pmod(F.xxhash64(ROW_ID), F.lit(n_chunks)))
            spark.sparkContext.addFile(model_dir, recursive=True)
            columns = {name: PREDICTION_PREFIX + name for name in out_types}
            scorer = partition_scorer(
                Path(model_dir).name, cache_dir, list(in_types), columns, ERROR, GUARD_HITS, retry
            )
            schema = StructType(
                [
                    *pending.schema.fields,
                    *[StructField(columns[name], kind) for name, kind in out_types.items()],
                    StructField(ERROR, StringType()),
                    StructField(GUARD_HITS, StringType()),
                ]
            )
            for k in range(n_chunks):
                part = plan.where(F.col(CHUNK) == k).drop(CHUNK)
                chunk = _score_chunk(part, scorer, schema, scored_with, output, parallelism, k, n_chunks)
                result.chunks.append(chunk)
                result.rows_scored += chunk.rows
                result.rows_errors += chunk.errors
                result.scoring_s += chunk.seconds
                for name, n in chunk.guard_hits.items():
                    result.guard_hits[name] = result.guard_hits.get(name, 0) + n
                if on_chunk:
                    on_chunk(chunk)
    log.info(
        "scored %d rows (%d errors) in %.1fs: %.1f rows/s",
        result.rows_scored,
        result.rows_errors,
        result.scoring_s,
        result.rows_per_s,
    )
    return result


def _score_chunk(frame, scorer, schema, scored_with: str, output: str, parallelism: int, k: int, n: int) -> Chunk:
    start = time.perf_counter()
    # One partition per core; the results are kept (memory, else disk) so counting them after the
    # write does not call the LM again.
    scored = (
        frame.repartition(parallelism)
        .mapInPandas(scorer, schema)
        .withColumn(SCORED_WITH, F.lit(scored_with))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        scored.write.mode("append").parquet(output)
        rows, errors = scored.agg(F.count(F.lit(1)), F.count(ERROR)).first()
        hits = guard_counts(scored)
    finally:
        scored.unpersist()
    chunk = Chunk(index=k, of=n, rows=rows, errors=errors, seconds=time.perf_counter() - start, guard_hits=hits)
    log.info("chunk %d/%d: %d rows, %d errors, %.1f rows/s", k + 1, n, rows, errors, rows / chunk.seconds)
    return chunk


def guard_counts(scored) -> dict[str, int]:
    """Rows each guard fired on (a row counts once per guard, however many of its fields it hit)."""
    names = F.array_distinct(F.transform(F.split(GUARD_HITS, "; "), lambda hit: F.split(hit, ":")[0]))
    hit = scored.where(F.col(GUARD_HITS).isNotNull()).select(F.explode(names).alias("guard"))
    return {row["guard"]: row["count"] for row in hit.groupBy("guard").count().collect()}
