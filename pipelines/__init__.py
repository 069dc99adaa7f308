"""DSPy programs as tracked, registered and served MLflow models.

Importing the package sets offline-friendly defaults for the libraries it drives, before any of
them is imported: litellm would otherwise spend ~8 s fetching its price map, deepeval would phone
home, and llama.cpp's OpenMP threads would spin-wait. MLflow's asynchronous trace export stays on (its
default): evaluation scores travel with their traces (`pipelines.evaluation.scoring`).
Each is a `setdefault`, so a value the user exported still wins.
"""

import os

_OFFLINE_DEFAULTS = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # llama.cpp's OpenMP threads spin while waiting by default; on a shared CPU the spinning loses the
    # core to other work and a call on the main thread slowed 2-6x. Passive waiting removes that.
    "OMP_WAIT_POLICY": "PASSIVE",
}
for _key, _value in _OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
