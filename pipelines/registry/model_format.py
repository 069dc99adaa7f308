"""Where models logged before `pipelines.model` find their class.

A model is logged "from code": MLflow copies its `pyfunc_entry.py` into the model, and a model logged before the
move imports `pipelines.registry.model_format.DSPyProgramModel`. Loaded in a process that has already imported
this `pipelines` (evaluate, register, the batch scorer), that import resolves here, not in the model's own `code/`.
"""

from pipelines.model.pyfunc import DSPyProgramModel

__all__ = ["DSPyProgramModel"]
