"""Batch scoring on Spark: a registered model over a table, resumable, bad rows isolated.

from pipelines.batch import score_file, spark_session

spark = spark_session("local[*]")
result = score_file(spark, "models:/travel_intents@champion", "messages.csv", "scored/")
"""

from pipelines.batch.job import Chunk, ScoreResult, resolve_model, score_file
from pipelines.batch.partitions import RowRetries
from pipelines.batch.spark import spark_session

__all__ = ["Chunk", "RowRetries", "ScoreResult", "resolve_model", "score_file", "spark_session"]
