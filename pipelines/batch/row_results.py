"""Rows in and out of a batch job: reading the input, stable row ids, what an earlier run already wrote.

A row's id is a hash of its content, not its position: it does not depend on how Spark splits the file
(which changes with the number of cores), and it survives a re-exported or re-ordered input. Identical
rows share an id; they always land in the same chunk (chunks are picked by id), so they are written
together or not at all, and a rerun never scores one of them twice.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType

ROW_ID = "row_id"
ERROR = "error"
GUARD_HITS = "guard_hits"  # the row's guard hits (`pii:redact EMAIL_ADDRESS; ...`), null if none
SCORED_WITH = "scored_with"  # the concrete model (models:/NAME/VERSION) that scored the row
PREDICTION_PREFIX = "predicted_"  # input files often hold the true labels under the output's own name
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "json", ".json": "json"}


def input_format(path: str, declared: str | None = None) -> str:
    if declared:
        return {"jsonl": "json"}.get(declared, declared)
    suffix = Path(path.rstrip("/")).suffix.lower()
    if suffix not in FORMATS and Path(path).is_dir():
        return "parquet"  # a directory of Parquet files, as Spark writes them
    if suffix not in FORMATS:
        raise ValueError(f"Cannot tell the format of {path}; set input_format to csv, parquet or jsonl")
    return FORMATS[suffix]


def read_input(spark: SparkSession, path: str, fmt: str, types: dict[str, DataType]) -> DataFrame:
    """The input table, with the model's input columns cast to the types its signature declares.

    CSV is read without type inference (every column a string, one pass over the file) and only the
    model's columns are cast. `try_cast`: a value that does not convert becomes null, which the model
    refuses for that row alone, where a failing cast would stop the job (Spark 4 casts in ANSI mode).
    """
    reader = spark.read
    if fmt == "csv":
        reader = reader.option("header", True).option("multiLine", True).option("escape", '"')
    frame = reader.format(fmt).load(path)
    missing = [name for name in types if name not in frame.columns]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; the model reads {list(types)}")
    casts = {name: F.col(name).try_cast(kind) for name, kind in types.items() if frame.schema[name].dataType != kind}
    return frame.withColumns(casts) if casts else frame


def check_names(columns: list[str], outputs: list[str]) -> None:
    """Refuse an input whose columns would be overwritten by the ones this job adds."""
    ours = {ROW_ID, ERROR, GUARD_HITS, SCORED_WITH, *(PREDICTION_PREFIX + name for name in outputs)}
    clash = sorted(ours & set(columns))
    if clash:
        raise ValueError(f"The input already has column(s) {clash}, which scoring writes; rename them first")


def row_id(columns: list[str]) -> Column:
    """128 bits of SHA-256 over the row as JSON (column order fixed by the file; nulls are left out)."""
    return F.substring(F.sha2(F.to_json(F.struct(*[F.col(f"`{c}`") for c in columns])), 256), 1, 32)


def written(spark: SparkSession, output: str) -> DataFrame | None:
    """`row_id` and `scored_with` of every row an earlier run committed to `output`; None if none did.

    Only committed files count: a write that crashed leaves its files under `_temporary/`, which Spark's
    readers skip (as they skip any name starting with `_` or `.`).
    """
    if "://" not in output and not any(Path(output).glob("*.parquet")):
        return None  # a local path: asking Spark would log a Java stack trace for a normal first run
    try:
        return spark.read.parquet(output).select(ROW_ID, SCORED_WITH)
    except AnalysisException:  # no such path, or a path holding no data files yet
        return None
