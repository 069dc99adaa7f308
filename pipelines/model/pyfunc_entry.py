"""MLflow "model from code" entry: the file MLflow runs to build the pyfunc when a model loads.

Logged in place of a cloudpickled object, so loading never unpickles code (MLflow's recommended
way for custom pyfunc models); the state lives in the model's `program.json` and `spec.json`.
"""

from mlflow.models import set_model

from pipelines.model.pyfunc import DSPyProgramModel

set_model(DSPyProgramModel())
