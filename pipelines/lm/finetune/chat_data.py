"""Chat rows (DSPy's fine-tuning format) -> token ids with the loss on the assistant turn only.

DSPy hands a weight optimiser rows like `{"messages": [system, user, assistant]}`, rendered by the
same adapter that formats prompts at inference. We render them with the model's own chat template
(the one llama.cpp applies when serving), so training sees exactly the text inference will send.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100  # PyTorch's cross-entropy skips these positions: no loss on the prompt


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


@dataclass
class EncodeReport:
    rows: int = 0
    kept: int = 0
    truncated: int = 0  # prompt shortened from the left to fit max_seq_len
    dropped: int = 0  # no assistant turn, or the answer alone exceeds max_seq_len


def encode_chat_rows(rows: list[dict], tokenizer, max_seq_len: int) -> tuple[list[Encoded], EncodeReport]:
    report = EncodeReport(rows=len(rows))
    encoded = []
    for row in rows:
        messages = row["messages"] if isinstance(row, dict) else row
        if not messages or messages[-1]["role"] != "assistant":
            report.dropped += 1
            continue
        prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full_text.startswith(prompt_text):  # a template that rewrites earlier turns: cannot split
            report.dropped += 1
            continue
        prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        answer = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
        if len(answer) >= max_seq_len:
            report.dropped += 1
            continue
        if len(prompt) + len(answer) > max_seq_len:
            # Keep the end of the prompt (the current input sits right before the answer) rather than
            # cutting the answer, which is the only part that carries a training signal.
            prompt = prompt[len(prompt) + len(answer) - max_seq_len :]
            report.truncated += 1
        encoded.append(Encoded(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer))
        report.kept += 1
    return encoded, report


def collate(batch: list[Encoded], pad_id: int):
    """Left-pad a batch into tensors (input_ids, attention_mask, position_ids, labels, answer_width).

    Left padding puts every row's answer at the end, so the forward pass only needs logits for the
    last `answer_width` positions (`logits_to_keep`): with a 150k-token vocabulary, the full logits of a
    long prompt are the largest tensor in training, and none of them but the answer's carry a loss.
    """
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, width - n :] = torch.tensor(e.input_ids)
        mask[i, width - n :] = 1
        labels[i, width - n :] = torch.tensor(e.labels)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from its own first token
    answer_width = max(sum(1 for t in e.labels if t != IGNORE_INDEX) for e in batch)
    return ids, mask, positions, labels, answer_width
