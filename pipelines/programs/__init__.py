"""DSPy programs a task can use; each is a `_target_` in `conf/program/`."""

from .classifier import Classifier, classification_signature
from .qa import QA

__all__ = ["QA", "Classifier", "classification_signature", "build_program"]


def build_program(program_cfg, labels: list[str] | None):
    """Instantiate `program_cfg`, giving it the task's label set when the task has one."""
    from hydra.utils import instantiate

    if labels:
        return instantiate(program_cfg, labels=labels)
    if program_cfg.get("_target_", "").endswith("Classifier"):
        raise ValueError(
            "This task has free-text answers (no label set) but the program is a classifier: "
            "use program=qa (experiment=gsm8k selects task and program together)"
        )
    return instantiate(program_cfg)
