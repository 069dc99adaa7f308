"""DSPy programs as tracked, registered and served MLflow models.

Importing the package sets offline-friendly defaults for the libraries it drives, before any of
them is imported: litellm would otherwise spend ~8 s fetching its price map, deepeval would phone
home, and MLflow's asynchronous trace logging would drop the metric scores DSPy attaches to traces.
Each is a `setdefault`, so a value the user exported still wins.
"""

import os

_OFFLINE_DEFAULTS = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
for _key, _value in _OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
