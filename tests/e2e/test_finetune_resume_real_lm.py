"""A real LoRA fine-tune (SmolLM2-135M, a few steps) stopped part-way resumes from its checkpoint: the same
batches, the losses so far kept, only the remaining steps run."""

from __future__ import annotations

import pytest

from pipelines.lm.finetune.lora import LoRASettings, train_lora
from tests.helpers import smollm2_path

pytestmark = pytest.mark.slow

ROWS = [
    {
        "messages": [
            {"role": "system", "content": "Answer with the code word."},
            {"role": "user", "content": text},
            {"role": "assistant", "content": word},
        ]
    }
    for word, text in [("zorp", "my flight is late"), ("blick", "I lost my bag"), ("fnord", "cancel my booking")] * 2
]


class Stop(Exception):
    pass


def test_a_stopped_fine_tune_resumes_where_its_checkpoint_left_it(tmp_path):
    settings = LoRASettings(
        epochs=2, batch_size=2, max_seq_len=64, learning_rate=5e-4, checkpoint_dir=str(tmp_path), checkpoint_every=2
    )  # 6 rows / batch 2 x 2 epochs = 6 steps, a checkpoint every 2

    def stop_after_three(step, loss):
        if step == 3:
            raise Stop  # killed during step 3's aftermath: the checkpoint holds step 2

    with pytest.raises(Stop):
        train_lora(smollm2_path(), ROWS, settings, on_step=stop_after_three)
    (folder,) = tmp_path.iterdir()
    assert (folder / "state.pt").is_file()

    seen = []
    _, result = train_lora(smollm2_path(), ROWS, settings, on_step=lambda step, loss: seen.append(step))
    assert result.resumed_from == 2 and result.steps == 6 and result.checkpoint == str(folder)
    assert seen == [1, 2, 3, 4, 5, 6]  # the resumed run reports the whole curve (1-2 from the checkpoint)
    assert result.tokens > 0 and result.tokens_per_s > 0
