"""DSPy's JSONAdapter, able to format fine-tuning data (DSPy 3.4 leaves it `NotImplementedError`, a TODO).

A weight step (BootstrapFinetune) formats its training rows with the adapter the program runs with.
Training must see exactly the prompt and answer format inference uses, so rather than training in
ChatAdapter's format and serving in JSON, this fills the gap the way ChatAdapter does it: the
adapter's own `format` for system + user turns and its own assistant rendering (here: the JSON object).
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.signatures.signature import Signature


class JSONAdapter(dspy.JSONAdapter):
    def format_finetune_data(
        self,
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
        outputs: dict[str, Any],
    ) -> dict[str, list[Any]]:
        # ChatAdapter's implementation is generic over format()/format_assistant_message_content().
        return dspy.ChatAdapter.format_finetune_data(self, signature, demos, inputs, outputs)
