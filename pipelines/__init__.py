"""DSPy programs as tracked, registered and served MLflow models.

Importing the package sets offline-friendly defaults for the libraries it drives, before any of
them is imported: litellm would otherwise spend ~8 s fetching its price map, deepeval would phone
home, and llama.cpp's OpenMP threads would spin-wait. Traces are written as each one ends, not by MLflow's
background export: on a sqlite store its writer threads contend for the database lock (the entry points that
score many rows, `evaluate` and `train`, turn it on in their config: `tracking.background_traces`, whose flushes
`pipelines.tracking.store` makes return once the queue is drained). `MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=true` turns the
background export on: evaluation scores still reach their traces (`pipelines.evaluation.runner`), and a
run ends once its traces are stored. MLflow's SQLAlchemy store opens a second pooled connection inside a write
(`start_trace` and a trace's first `log_spans` read the experiment in a nested session): with traces written from
as many threads as its pool holds (5 + 10 overflow: `eval.num_threads` >= 15), every connection could be held by a
thread waiting for another, all of them stalled for the pool's 30 s timeout, and the one that timed out lost its
trace. No overflow limit lets the nested checkout always proceed (sqlite's own lock still serialises the writes).
Each is a `setdefault`, so a value the user exported still wins.
"""

import os

_OFFLINE_DEFAULTS = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "-1",  # SQLAlchemy: no limit (see above)
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # llama.cpp's OpenMP threads spin while waiting by default; on a shared CPU the spinning takes the core
    # from other work, the main thread's calls included (`python -m benchmarks.speed only=[engine]
    # engine.burners=2` measures a call beside busy CPUs). Passive waiting removes that.
    "OMP_WAIT_POLICY": "PASSIVE",
}
for _key, _value in _OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
