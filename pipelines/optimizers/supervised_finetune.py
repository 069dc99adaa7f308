"""Supervised fine-tuning from gold labels: the program's LM fine-tuned on the train split's input -> output pairs.

Where BootstrapFinetune trains on the program's own traces that pass the metric (so it only learns what the
model already gets right, or what a teacher shows it), this trains on the labels themselves, every row, in
exactly the format the adapter sends at inference (`adapter.format_finetune_data`: the same system and user
messages, the assistant turn being the gold outputs as the adapter would render them). The LM's provider
does the training (ours: LoRA on the CPU, `pipelines.lm.finetune`; settings from `lm.finetune`, overridden by
`train_kwargs`), and every predictor is moved to the fine-tuned model.

    >>> tuned = SupervisedFinetune(train_kwargs={"epochs": 1, "per_label": 20}).compile(program, trainset=rows)
    ...                                                                                 # doctest: +SKIP

A predictor is trained only where every one of its output fields is labelled in the examples (a
classifier's `label`); a program with none such raises rather than fine-tune on nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import dspy
from dspy.teleprompt import Teleprompter

log = logging.getLogger(__name__)


class SupervisedFinetune(Teleprompter):
    def __init__(self, train_kwargs: dict[str, Any] | None = None, exclude_demos: bool = True, adapter=None):
        super().__init__()
        self.train_kwargs = dict(train_kwargs or {})
        self.exclude_demos = exclude_demos  # train on demo-free prompts: shorter sequences, the task itself
        self.adapter = adapter

    def chat_rows(self, program: dspy.Module, trainset: list[dspy.Example]) -> list[dict]:
        """The fine-tuning rows: one chat per (labelled predictor, example), rendered by the adapter."""
        adapter = self.adapter or dspy.settings.adapter or dspy.JSONAdapter()
        rows = []
        for name, predictor in program.named_predictors():
            outputs = list(predictor.signature.output_fields)
            inputs = list(predictor.signature.input_fields)
            labelled = [ex for ex in trainset if all(f in ex for f in outputs) and all(f in ex for f in inputs)]
            if not labelled:
                log.info("predictor %s: no example labels all of %s; not trained", name, outputs)
                continue
            demos = [] if self.exclude_demos else [d.toDict() if hasattr(d, "toDict") else d for d in predictor.demos]
            for ex in labelled:
                rows.append(
                    adapter.format_finetune_data(
                        signature=predictor.signature,
                        demos=demos,
                        inputs={f: ex[f] for f in inputs},
                        outputs={f: ex[f] for f in outputs},
                    )
                )
        if not rows:
            raise ValueError("No predictor of the program has all its output fields labelled in the trainset")
        return rows

    def compile(self, student: dspy.Module, *, trainset: list[dspy.Example], **kwargs) -> dspy.Module:
        try:
            lm = student.get_lm() or dspy.settings.lm
        except ValueError:  # predictors on different LMs: which one to fine-tune is not ours to guess
            raise ValueError("SupervisedFinetune fine-tunes one LM: the program's predictors use several") from None
        if lm is None or not getattr(getattr(lm, "provider", None), "finetunable", False):
            raise ValueError(f"SupervisedFinetune needs an LM whose provider can fine-tune, got {lm!r}")
        rows = self.chat_rows(student, trainset)
        log.info("supervised fine-tune of %s on %d rows", lm.model, len(rows))
        lm.kill()  # frees the serving context's memory before training (as BootstrapFinetune does)
        job = lm.finetune(train_data=rows, train_data_format="chat", train_kwargs=self.train_kwargs)
        tuned = job.result()
        if isinstance(tuned, Exception):
            raise tuned
        job.thread.join()
        program = student.deepcopy()
        program.set_lm(tuned)
        program._compiled = True
        return program
