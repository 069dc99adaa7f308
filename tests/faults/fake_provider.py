"""A fake OpenAI-compatible provider on loopback that misbehaves on purpose, and counts what it is sent.

    with FakeProvider(fail_every=(1, 4, 7)) as fake:       # requests 1, 4, 7, 11, 14, ... get a 500
        cfg overrides: lm=openai_compatible lm.api_base={fake.url} lm.model=openai/fake lm.api_key_env=FAKE_KEY
    fake.requests                                          # every request it received, failed ones included

Faults (each a constructor argument; they combine in this order):
- `fail_all`: every request gets a 500;
- `fail_every`: request numbers (counted from 0) whose value mod 10 is listed get a 500, so `(1, 4, 7)`
  fails 30 % of requests and never two in a row (a retry always succeeds);
- `too_many`: the first N requests get a 429 with `Retry-After: retry_after`;
- `hang_s`: every request is held that long before its answer (bounded; the server's shutdown cuts it);
- `echo_auth`: every request gets a 401 whose error text repeats the Authorization header, as some proxies do.

Answers follow `tests.fakes.TRAVEL_RULES`, as JSON for DSPy's JSONAdapter. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fakes import TRAVEL_RULES


class FakeProvider:
    def __init__(
        self,
        fail_all: bool = False,
        fail_every: tuple[int, ...] = (),
        too_many: int = 0,
        retry_after: float = 1.0,
        hang_s: float = 0.0,
        echo_auth: bool = False,
    ):
        self.fail_all, self.fail_every, self.too_many, self.retry_after = fail_all, fail_every, too_many, retry_after
        self.hang_s, self.echo_auth = hang_s, echo_auth
        self.requests = 0
        self.statuses: list[int] = []
        self.auth: list[str] = []
        self.times: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def overrides(self, key_env: str = "FAKE_KEY") -> list[str]:
        return ["lm=openai_compatible", f"lm.api_base={self.url}", "lm.model=openai/fake", f"lm.api_key_env={key_env}"]

    def __enter__(self) -> FakeProvider:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True  # a hung handler never keeps the test process alive
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # releases hung handlers at once
        self._server.shutdown()
        self._server.server_close()

    def _next(self, auth: str) -> tuple[int, int]:
        with self._lock:
            number = self.requests
            self.requests += 1
            self.auth.append(auth)
            self.times.append(time.monotonic())
        if self.fail_all or (number % 10) in self.fail_every:
            status = 500
        elif number < self.too_many:
            status = 429
        elif self.echo_auth:
            status = 401
        else:
            status = 200
        with self._lock:
            self.statuses.append(status)
        return number, status


class _Handler(BaseHTTPRequestHandler):
    fake: FakeProvider

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        auth = self.headers.get("Authorization", "")
        _, status = self.fake._next(auth)
        if self.fake.hang_s:
            self.fake._stop.wait(self.fake.hang_s)  # bounded: at most hang_s, less if the server stops
        if status == 200:
            self._send(200, _answer(body))
        elif status == 429:
            self._send(429, _error("rate limited", "rate_limit_exceeded"), {"Retry-After": str(self.fake.retry_after)})
        elif status == 401:
            self._send(401, _error(f"invalid credentials: received Authorization: {auth}", "invalid_api_key"))
        else:
            self._send(500, _error("the fake provider is failing on purpose", "server_error"))

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): nothing to answer
            pass

    def log_message(self, *args):
        pass


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": code, "code": code}}


def _answer(body: dict) -> dict:
    last = body.get("messages", [{}])[-1].get("content", "")
    last = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last)
    match = re.search(r"\[\[ ## text ## \]\]\s*(.*?)(?:\n\n|\[\[|$)", last, re.S)
    text = (match.group(1) if match else last).lower()
    label = next((lab for key, lab in TRAVEL_RULES.items() if key in text), "book_flight")
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": json.dumps({"label": label})},
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
    }
