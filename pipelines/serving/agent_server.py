"""`serve stream=true`: the registered program behind MLflow's agent server (Responses API, Server-Sent Events).

    python -m pipelines.serve stream=true        # models:/NAME@champion on http://127.0.0.1:5001
    curl -N http://127.0.0.1:5001/responses -H 'Content-Type: application/json' \\
      -d '{"input": [{"role": "user", "content": "where is my suitcase"}], "stream": true}'

A request gives the program's inputs as `custom_inputs` (`{"ticket": "...", "channel": "email"}`), or as the
last user message: a JSON object of the inputs, or plain text when the program has one text input. One row
per request (a table of rows goes to `serve` without `stream`, or to `python -m pipelines.score`).

The answer has one `output_text` item per output field of the task's contract; streamed, the items'
`response.output_text.delta` events arrive as the last stage writes them, then one
`response.output_item.done` per field and `custom_outputs` with every field's value. Each request is a
trace (MLflow's agent server opens the root span; DSPy autolog adds the program's spans beneath it) with a
`first_token` event and a `time_to_first_token_s` attribute on the root span.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Generator
from typing import Any

import dspy
import mlflow
import pandas as pd
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from mlflow.entities import SpanEvent
from mlflow.genai.agent_server import AgentServer, get_invoke_function, invoke, stream
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

from pipelines.model.errors import serving_error
from pipelines.model.pyfunc import DSPyProgramModel
from pipelines.model.streaming import StreamResponse, stream_program
from pipelines.programs.asynchronous import is_async

MODEL_ENV = "PIPELINES_SERVE_MODEL_URI"
TIMEOUT_ENV = "PIPELINES_SERVE_TIMEOUT"
TRACE_ENV = "PIPELINES_SERVE_TRACE"
SCORE_HINT = "for long batches use the batch scorer: python -m pipelines.score"


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") if isinstance(p, dict) else getattr(p, "text", "") or "" for p in content)


def _value_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class ProgramAgent(ResponsesAgent):
    """A loaded `DSPyProgramModel` as a ResponsesAgent: same program, LM, adapter and input checks."""

    def __init__(self, model: DSPyProgramModel):
        self.model = model
        self.inputs = model.contract.input_names
        self.outputs = model.contract.output_names

    def row(self, request: ResponsesAgentRequest) -> dict:
        """The request's one row of program inputs, checked as `predict` checks its rows."""
        fields = request.custom_inputs
        if not fields:
            users = [m for m in request.input if getattr(m, "role", None) == "user"]
            text = _text(users[-1].content) if users else ""
            try:
                fields = json.loads(text)
            except ValueError:
                fields = None
            if not isinstance(fields, dict):
                text_inputs = [f.name for f in self.model.contract.inputs if f.type == "str"]
                if len(self.inputs) != 1 or not text_inputs:
                    raise BadRequest(f"Send the inputs {self.inputs} as custom_inputs or as a JSON object message")
                fields = {self.inputs[0]: text}
        return self.model.guarded_rows(pd.DataFrame([fields]))[0][0]

    def _items(self, outputs: dict[str, Any], ids: dict[str, str]) -> list[dict]:
        return [self.create_text_output_item(_value_text(outputs[f]), ids[f]) for f in self.outputs]

    async def astream(self, request: ResponsesAgentRequest) -> AsyncIterator[dict]:
        row = self.row(request)
        ids = {f: f"msg_{f}_{uuid.uuid4().hex[:8]}" for f in self.outputs}
        start, first = time.monotonic(), True
        model = self.model
        async for item in stream_program(model.program, row, lm=model.lm, adapter=model.adapter, outputs=self.outputs):
            if isinstance(item, StreamResponse):
                if not item.chunk or not model.streams_tokens():
                    continue
                if first and (span := mlflow.get_current_active_span()) is not None:
                    span.set_attribute("time_to_first_token_s", round(time.monotonic() - start, 4))
                    span.add_event(SpanEvent("first_token", attributes={"field": item.signature_field_name}))
                first = False
                yield self.create_text_delta(item.chunk, ids[item.signature_field_name])
            else:
                outputs, _ = model.guarded_outputs(item)
                items = self._items(outputs, ids)
                for done in items[:-1]:
                    yield {"type": "response.output_item.done", "item": done}
                yield {"type": "response.output_item.done", "item": items[-1], "custom_outputs": outputs}

    async def ainvoke(self, request: ResponsesAgentRequest) -> dict:
        row = self.row(request)
        model = self.model
        if is_async(model.program):  # awaited here: no thread per request
            with dspy.context(lm=model.lm, adapter=model.adapter):
                try:
                    prediction = await model.program.acall(**row)
                except Exception as exc:
                    raise serving_error(exc) from None
            outputs, _ = model.guarded_outputs(prediction)
        else:
            frame = await asyncio.to_thread(model.predict, None, pd.DataFrame([row]))
            outputs = frame.iloc[0].to_dict()
        ids = {f: f"msg_{f}_{uuid.uuid4().hex[:8]}" for f in self.outputs}
        return {"output": self._items(outputs, ids), "custom_outputs": outputs}

    # The ResponsesAgent interface, for use in a process (the server calls the async ones above).
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        return ResponsesAgentResponse(**asyncio.run(self.ainvoke(request)))

    def predict_stream(self, request: ResponsesAgentRequest) -> Generator[ResponsesAgentStreamEvent, None, None]:
        from dspy.streaming import apply_sync_streaming

        for event in apply_sync_streaming(self.astream(request)):
            yield ResponsesAgentStreamEvent(**event)


_agent: ProgramAgent | None = None


class BadRequest(ValueError):
    """A request the program cannot answer as sent: the caller's to fix (HTTP 400)."""


async def _status_of_the_cause(request: Request, exc: HTTPException):
    """MLflow's agent server turns every exception of a handler into a 500, raised while handling it: the
    original is the HTTPException's `__context__`. A bad input (ours: `BadRequest`, or the model's
    `MlflowException` with a 4xx code, e.g. a guard's refusal) is the caller's fault, and an LM failure has
    its own 5xx (`pipelines.model.errors`): answer with that status and the cause's message."""
    from mlflow.exceptions import MlflowException

    from pipelines.model.errors import serving_error

    cause = exc.__context__
    if exc.status_code == 500 and isinstance(cause, BadRequest):
        return JSONResponse({"error_code": "BAD_REQUEST", "message": str(cause)}, status_code=400)
    if exc.status_code == 500 and isinstance(cause, Exception) and not isinstance(cause, HTTPException):
        error = cause if isinstance(cause, MlflowException) else serving_error(cause)
        return JSONResponse(
            {"error_code": error.error_code, "message": error.message}, status_code=error.get_http_status_code()
        )
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _invoke(request: ResponsesAgentRequest) -> dict:
    return await _agent.ainvoke(request)


class StreamTimeout(TimeoutError):
    """A stream still running at the server's timeout: MLflow's agent server sends it as an `error` event."""


async def _stream(request: ResponsesAgentRequest) -> AsyncIterator[dict]:
    # The timeout bounds the whole stream, not only its start: the response's headers go out at once, so
    # the middleware's bound never fires for a stream. Waiting stops at the deadline and the events end
    # with an error; the LM call itself runs on until the LM's own timeout (lm.timeout) frees its thread.
    timeout = _timeout_s()
    deadline = asyncio.get_running_loop().time() + timeout
    events = _agent.astream(request)
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StreamTimeout(f"The stream ran past {timeout:g} s (serve timeout=...)") from None
            yield event
    finally:
        await events.aclose()


def _timeout_s() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "60"))


def create_app() -> FastAPI:
    """The uvicorn factory `serve stream=true` runs: the model and settings come from the environment it sets."""
    global _agent
    if os.environ.get(TRACE_ENV, "true").lower() == "true":
        mlflow.dspy.autolog(log_traces=True)
    loaded = mlflow.pyfunc.load_model(os.environ[MODEL_ENV])
    _agent = ProgramAgent(loaded.unwrap_python_model())
    _agent.model.limits.freeze()  # this process is a server: the model's heap freeze (`pipelines.model.limits`)
    if get_invoke_function() is None:  # MLflow's registry of handlers is per process: register once
        invoke()(_invoke)
        stream()(_stream)
    server = AgentServer("ResponsesAgent")
    server.app.add_exception_handler(HTTPException, _status_of_the_cause)
    timeout = _timeout_s()

    @server.app.middleware("http")
    async def request_timeout(request: Request, call_next):
        # Bounds a whole answer (a stream's headers leave at once: `_stream` bounds the stream itself).
        try:
            return await asyncio.wait_for(call_next(request), timeout)
        except TimeoutError:
            detail = f"No answer within {timeout:g} s (serve timeout=...); {SCORE_HINT}"
            return JSONResponse({"error_code": "TIMEOUT", "message": detail}, status_code=504)

    @server.app.get("/ping")
    async def ping() -> dict[str, str]:  # what MLflow's scoring server answers too: one health check for both
        return {"status": "healthy"}

    return server.app
