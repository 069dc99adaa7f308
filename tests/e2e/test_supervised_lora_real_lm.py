"""The supervised route for real (SmolLM2-135M, 3 steps): gold labels rendered by the JSON adapter become LoRA
rows, the provider trains and writes the GGUF adapter, and the run gets the loss curve, tokens/s, wall time and
peak memory. No inference: compile never calls the LM."""

from __future__ import annotations

import dspy
import mlflow
import pytest
from mlflow import MlflowClient

from pipelines.lm import local_lm
from pipelines.lm.json_adapter import JSONAdapter
from pipelines.optimizers.supervised_finetune import SupervisedFinetune
from tests.helpers import smollm2_path

pytestmark = pytest.mark.slow

TRAIN = [("my card has not arrived", "card_arrival"), ("I lost my card", "lost_or_stolen_card")] * 3


def test_supervised_lora_fine_tunes_on_gold_labels_and_logs_the_run(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("supervised-lora")  # not the experiment id an earlier test left active in this process
    lm = local_lm(
        model="smollm2-135m",
        model_path=smollm2_path(),
        n_ctx=512,
        cache=False,
        adapters_dir=str(tmp_path / "adapters"),
        finetune={"max_seq_len": 512, "checkpoint_dir": str(tmp_path / "checkpoints")},
    )
    program = dspy.Predict("text -> label")
    program.set_lm(lm)
    trainset = [dspy.Example(text=t, label=y).with_inputs("text") for t, y in TRAIN]
    optimizer = SupervisedFinetune(adapter=JSONAdapter(), train_kwargs={"max_steps": 3, "per_label": 2})
    with mlflow.start_run() as run:
        tuned = optimizer.compile(program, trainset=trainset)
    assert tuned.get_lm().model.startswith("local/smollm2-135m:ft-")
    client = MlflowClient()
    metrics = client.get_run(run.info.run_id).data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "finetune_loss")] == [1, 2, 3]
    assert metrics["finetune_train_rows"] == 4  # per_label=2 of each of the two labels
    assert metrics["finetune_tokens"] > 0 and metrics["finetune_tokens_per_s"] > 0
    assert metrics["finetune_total_s"] > 0 and metrics["finetune_peak_rss_mb"] > 0
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1
