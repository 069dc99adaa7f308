"""`serve` without `stream`: MLflow's own scoring server app, behind a guard for two requests it answers 500.

    python -m uvicorn --factory pipelines.serving.scoring_app:create_app    # what `python -m pipelines.serve` runs

The app is `mlflow.pyfunc.scoring_server.init(model)`, exactly what `mlflow models serve` runs, so every route,
format and error is MLflow's. Two malformed requests fail in MLflow's parser, before the model sees them, with
a 500 and a stack trace (MLflow 3.17):
- a POST to `/invocations` without a Content-Type header (the parser splits `None`): here a 415 naming the
  types the server takes;
- a JSON body nested deeper than Python's parser recurses (`[[[[...` 100,000 deep: a RecursionError): here
  a 400. A model's input is a few levels deep; `MAX_DEPTH` allows far more.
Under plain `mlflow models serve` both stay 500s; every other malformed request the model sees is a 4xx
there too (the model's own checks: `pipelines.model.inputs`, `ServingLimits.check_rows`).
"""

from __future__ import annotations

import json
import os
import re

MODEL_ENV = "PIPELINES_SERVE_MODEL_URI"
MAX_DEPTH = 100  # JSON nesting allowed in a request: a table of rows is 3-4 levels deep
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


def nesting_depth(body: bytes, stop_at: int = MAX_DEPTH) -> int:
    """How deep `body`'s JSON arrays and objects nest (brackets inside strings do not count); counting stops
    past `stop_at`."""
    if body.count(b"[") + body.count(b"{") <= stop_at:
        return 0  # cannot nest deeper than it has brackets: nothing to scan
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_at:
                    break
        else:
            depth -= 1
    return deepest


class RequestGuard:
    """ASGI middleware: a 4xx for the requests MLflow's parser would answer 500 (see the module docstring)."""

    def __init__(self, app, max_depth: int = MAX_DEPTH):
        self.app, self.max_depth = app, max_depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != "/invocations":
            return await self.app(scope, receive, send)
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1").strip()
        if not content_type:
            return await _reply(
                send,
                415,
                "No Content-Type header; send the rows as application/json (dataframe_split, dataframe_records, "
                "inputs or instances), text/csv or application/x-parquet",
            )
        body = await _body(receive)
        if content_type.split(";")[0].strip().lower() == "application/json":
            if nesting_depth(body, self.max_depth) > self.max_depth:
                return await _reply(send, 400, f"The JSON body nests deeper than {self.max_depth} levels")
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _reply(send, status: int, message: str) -> None:
    data = json.dumps({"error_code": "BAD_REQUEST", "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def create_app():
    """MLflow's scoring app for the model at `PIPELINES_SERVE_MODEL_URI`, behind `RequestGuard` (uvicorn's
    `--factory`: called in each worker, inside its event loop, as MLflow's own app module is imported)."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_ENV])
    return RequestGuard(scoring_server.init(model))
