"""DSPy's JSONAdapter, able to format fine-tuning data, and building its response format once per signature.

Fine-tuning data: DSPy 3.4 leaves `format_finetune_data` a `NotImplementedError` (a TODO). A weight step
(BootstrapFinetune) formats its training rows with the adapter the program runs with. Training must see exactly
the prompt and answer format inference uses, so rather than training in ChatAdapter's format and serving in JSON,
this fills the gap the way ChatAdapter does it: the adapter's own `format` for system + user turns and its own
assistant rendering (here: the JSON object).

Response format: before every call DSPy's JSONAdapter asks the LM's capabilities and, where the LM takes a schema,
builds a Pydantic model of the signature's outputs and its JSON schema. Both depend only on the signature, the
adapter's tool-calling setting and the LM's model and engine, yet are rebuilt on every `dspy.Predict` call, a
large share of a serving worker's CPU per call (`python -m benchmarks.speed only=[serving]` measures it), and with
a model name DSPy's metadata does not know (a self-hosted server) the capability lookup scans the whole table. Here
the format DSPy chooses is kept per signature (weakly: a signature that goes away takes its entry with it), LM
class, model and engine.

Traces: one `JSONAdapter.format` and one `JSONAdapter.parse` span per LM call (DSPy's subclassing traced them three
and two times; see the end of this file).
"""

from __future__ import annotations

import copy
import inspect
import threading
import weakref
from typing import Any

import dspy
from dspy.signatures.signature import Signature
from dspy.utils.callback import with_callbacks

_MISSING = object()  # DSPy chose no response_format for this LM (it does not take one)
# signature -> {(LM class, model, engine, tool calling): the format DSPy chose}
_FORMATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FORMATS_LOCK = threading.Lock()  # rows run on several threads (Evaluate, the scoring server)


def _engine_key(lm) -> str:
    engine = getattr(lm, "engine", None)
    return engine if isinstance(engine, str) else f"{type(engine).__module__}.{type(engine).__qualname__}"


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

    def _prepare_response_format(self, lm, lm_kwargs, signature) -> None:
        key = (type(lm), getattr(lm, "model", None), _engine_key(lm), self.use_native_function_calling)
        with _FORMATS_LOCK:
            known = _FORMATS.get(signature, {}).get(key, None)
        if known is None:
            chosen: dict[str, Any] = {}
            super()._prepare_response_format(lm, chosen, signature)  # DSPy's choice, made once
            known = chosen.get("response_format", _MISSING)
            with _FORMATS_LOCK:
                _FORMATS.setdefault(signature, {})[key] = known
        if known is not _MISSING:
            # A Pydantic model class is shared as is; a dict ({"type": "json_object"}) is copied, as DSPy makes
            # a fresh one for every call.
            lm_kwargs["response_format"] = copy.deepcopy(known) if isinstance(known, dict) else known


# One callback layer each around format() and parse(). DSPy wraps both with its callbacks in every adapter subclass
# as the subclass is defined (`Adapter.__init_subclass__`), whether it overrides them or not, so each level of
# subclassing adds a layer: under MLflow's autolog one LM call traced three nested `JSONAdapter.format` spans and two
# `JSONAdapter.parse` spans, each a write of its own to the tracking store.
# The same implementation, wrapped once.
JSONAdapter.format = with_callbacks(inspect.unwrap(dspy.JSONAdapter.format))
JSONAdapter.parse = with_callbacks(inspect.unwrap(dspy.JSONAdapter.parse))
