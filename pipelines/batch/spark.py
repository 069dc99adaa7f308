"""The Spark session a batch job runs on: built once per process and passed down.

    spark = spark_session("local[2]", conf={"spark.ui.enabled": False})

`local[*]` uses every core of this machine; any master URL works (`spark://host:7077`, `yarn`, `k8s://...`).
On a cluster the executors need this project's Python environment (what `mlflow.pyfunc.spark_udf` calls
`env_manager="local"`) and, for a provider LM, the key's environment variable: keys are never shipped in
Spark settings, which the Spark UI and event logs display.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from pyspark.sql import SparkSession

# PySpark 4.3 warns on every pandas UDF that it "does not yet fully support pandas >= 3"; the project
# pins pandas 3 and the tests cover the conversions scoring uses (strings, numbers, booleans, nulls).
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)


def _setting(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def spark_session(
    master: str = "local[*]", app_name: str = "dspy-mlflow-pipelines", conf: Mapping[str, Any] | None = None
) -> SparkSession:
    # Local executors run this interpreter (the project's venv), not whatever `python3` is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in (conf or {}).items():
        builder = builder.config(key, _setting(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
