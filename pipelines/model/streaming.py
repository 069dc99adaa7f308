"""Stream a DSPy program's outputs token by token: `dspy.streamify` with one listener per output field.

Each output field of the task's contract is listened to on the LAST predictor that writes it, so a
multi-stage program (draft -> verify) streams its final stage, not the intermediate draft. The stream
ends with the program's `dspy.Prediction`, which stays the authoritative answer (a cache hit, or a field
the program assembles itself, arrives only there).

Under the JSON adapter, DSPy's listener hands over raw JSON text (quotes, and at a field's end a piece of
the next key, depending on how the LM split its tokens); each chunk here is the new part of the field's
decoded VALUE instead, so the chunks of a field concatenate to exactly its answer.

    >>> async for item in stream_program(program, row, lm=lm, adapter=adapter, outputs=["answer"]):  # doctest: +SKIP
    ...     print(item)
    StreamResponse(predict_name='verify', signature_field_name='answer', chunk='4', ...)
    ...
    Prediction(answer='42')
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import dspy
import jiter
from dspy.streaming import StreamListener, StreamResponse, apply_sync_streaming

from pipelines.programs.asynchronous import is_async

__all__ = ["StreamResponse", "output_listeners", "stream_program", "stream_program_sync"]


def output_listeners(program: dspy.Module, outputs: list[str]) -> list[StreamListener]:
    """A fresh listener per output field (listeners keep per-stream state), on the last predictor writing it.

    `named_predictors` follows attribute order, which for the shipped programs is stage order."""
    listeners = []
    for field in outputs:
        writers = [(name, p) for name, p in program.named_predictors() if field in p.signature.output_fields]
        if writers:
            name, predictor = writers[-1]
            listeners.append(StreamListener(signature_field_name=field, predict=predictor, predict_name=name))
    return listeners


class _JSONValueText:
    """The decoded text of each field's JSON value so far, from the raw chunks the listener passes on."""

    def __init__(self):
        self.raw: dict[str, str] = {}
        self.sent: dict[str, str] = {}

    def delta(self, field: str, chunk: str) -> str:
        self.raw[field] = self.raw.get(field, "") + chunk
        try:
            value = jiter.from_json(f'{{"{field}": {self.raw[field]}'.encode(), partial_mode="trailing-strings")
        except ValueError:
            return ""  # not parseable yet (a number cut before its digits, say): wait for more
        text = "" if (v := value.get(field)) is None else v if isinstance(v, str) else json.dumps(v)
        sent = self.sent.get(field, "")
        if not text.startswith(sent):  # a partial number reinterpreted: the Prediction carries the truth
            return ""
        self.sent[field] = text
        return text[len(sent) :]


async def stream_program(
    program: dspy.Module, row: dict, *, lm: dspy.LM, adapter, outputs: list[str]
) -> AsyncIterator[StreamResponse | dspy.Prediction]:
    """Partial outputs (`StreamResponse`: field name + text chunk), then the final `dspy.Prediction`.

    A program with `aforward` is awaited on the caller's event loop (`acall`); any other runs on a worker
    thread (DSPy's `asyncify`, at most `dspy.settings.async_max_workers` at once)."""
    streaming = dspy.streamify(
        program,
        stream_listeners=output_listeners(program, outputs),
        include_final_prediction_in_output_stream=True,
        is_async_program=is_async(program),
    )
    values = _JSONValueText() if isinstance(adapter, dspy.JSONAdapter) else None
    with dspy.context(lm=lm, adapter=adapter):
        async for item in streaming(**row):
            if isinstance(item, StreamResponse) and values is not None:
                item.chunk = values.delta(item.signature_field_name, str(item.chunk or ""))
            if isinstance(item, StreamResponse | dspy.Prediction):  # status messages are not for the client
                yield item


def stream_program_sync(
    program: dspy.Module, row: dict, *, lm: dspy.LM, adapter, outputs: list[str]
) -> Iterator[StreamResponse | dspy.Prediction]:
    """`stream_program` as a plain generator (its event loop runs on a helper thread, DSPy's own bridge)."""
    with dspy.context(lm=lm, adapter=adapter):  # copied into the helper thread at the first item
        yield from apply_sync_streaming(stream_program(program, row, lm=lm, adapter=adapter, outputs=outputs))
