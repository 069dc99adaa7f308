"""DSPy programs a task can use; each is a `_target_` in `conf/program/`."""

from .classifier import Classifier, classification_signature

__all__ = ["Classifier", "classification_signature"]
