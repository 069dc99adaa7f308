"""A fake OpenAI-compatible provider on loopback: answers like an LM, misbehaves on request, counts what it is sent.

Stands in for OpenAI, vLLM or llama.cpp's server in the tests and the speed benchmark, so they exercise the real
provider path (LiteLLM over HTTP, keys from the environment, DSPy's cache and retries). It scales the way a real
LM server with spare capacity does: every request waits `latency` seconds in its own thread, so N concurrent
callers get N times the throughput, and anything below that is ours.

    with FakeProvider(latency=0.1) as fake:                 # in process, on a thread
        cfg overrides: fake.overrides()  (lm=openai_compatible lm.api_base={fake.url} lm.model=self-hosted/fake ...)
    fake.requests, fake.statuses, fake.auth, fake.times     # every request it received, failed ones included

    python -m benchmarks.fake_provider --port 8011 --latency 0.05   # the same, as a process

Answers: every output field the JSON adapter asks for, a label by the keyword rules `TRAVEL_RULES` (else the
first allowed label), other fields a fixed string; usage 50 prompt + 5 completion tokens a call. A request with
`"stream": true` gets the same answer as Server-Sent Events, a few characters per `chat.completion.chunk`: the
first after `latency`, the rest `chunk_s` apart, like a server decoding one token at a time.

Faults (constructor arguments; they combine in this order):
- `fail_all`: every request gets a 500;
- `fail_every`: request numbers (counted from 0) whose value mod 10 is listed get a 500, so `(1, 4, 7)` fails 30 %
  of requests and never two in a row (a retry always succeeds);
- `too_many`: the first N requests get a 429 with `Retry-After: retry_after`;
- `echo_auth`: every request gets a 401 whose error text repeats the Authorization header, as some proxies do;
- hangs: a request whose last message contains `HANG` (or every request, with `hang_all`) is held `hang_s`
  seconds before its answer; stopping the provider releases it at once.

It binds 127.0.0.1 only, and keeps connections alive with TCP_NODELAY, as real servers do.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A word in the text -> its intent: the fake's answers, and the fake LM's in `tests.fakes`.
TRAVEL_RULES = {
    "refund": "refund_request",
    "money back": "refund_request",
    "cancel": "cancel_booking",
    "seat": "change_seat",
    "bag": "baggage_policy",
    "luggage": "lost_luggage",
    "suitcase": "lost_luggage",
    "check in": "check_in",
    "check-in": "check_in",
    "boarding pass": "check_in",
    "status": "flight_status",
    "delayed": "flight_status",
    "on time": "flight_status",
    "book": "book_flight",
    "flight to": "book_flight",
}


# JSONAdapter lists the outputs in its system message: "1. `label` (Literal['a', 'b'])".
_OUTPUT_FIELD = re.compile(r"^\d+\. `(\w+)` \(([^)\n]*)\)", re.M)
_INPUT_TEXT = re.compile(r"\[\[ ## \w+ ## \]\]\s*(.*?)(?:\n\n|\[\[|$)", re.S)
CHUNK_CHARS = 4  # about one token of JSON per streamed chunk
USAGE = {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}


def _text(content) -> str:
    return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content or [])


def _outputs(system: str) -> dict[str, list[str]]:
    """Output field -> allowed labels (empty for free text), from the system message's output section."""
    section = system.split("Your output fields are:", 1)[-1].split("All interactions", 1)[0]
    return {name: re.findall(r"'([^']+)'", kind) for name, kind in _OUTPUT_FIELD.findall(section)}


def answer(messages: list[dict]) -> str:
    """The JSON answer to a chat: each output field from the input text by `TRAVEL_RULES`."""
    system = next((_text(m["content"]) for m in messages if m["role"] == "system"), "")
    last = _text(messages[-1]["content"]) if messages else ""
    text = " ".join(_INPUT_TEXT.findall(last)).lower() or last.lower()
    out = {}
    # No adapter's system message (a bare `lm("...")`): one `label` field, any of the rules' labels.
    for name, labels in (_outputs(system) or {"label": list(dict.fromkeys(TRAVEL_RULES.values()))}).items():
        if labels:
            out[name] = next((lab for key, lab in TRAVEL_RULES.items() if key in text and lab in labels), labels[0])
        else:
            out[name] = "A fixed answer."
    return json.dumps(out)


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": code, "code": code}}


class FakeProvider:
    def __init__(
        self,
        latency: float = 0.0,
        *,
        chunk_s: float = 0.0,
        hang_s: float = 3600.0,
        hang_all: bool = False,
        fail_all: bool = False,
        fail_every: tuple[int, ...] = (),
        too_many: int = 0,
        retry_after: float = 1.0,
        echo_auth: bool = False,
        port: int = 0,
    ):
        self.latency, self.chunk_s, self.hang_s, self.hang_all = latency, chunk_s, hang_s, hang_all
        self.fail_all, self.fail_every, self.too_many, self.retry_after = fail_all, fail_every, too_many, retry_after
        self.echo_auth, self.port = echo_auth, port
        self.requests = 0
        self.statuses: list[int] = []
        self.auth: list[str] = []
        self.user_agents: list[str] = []  # which client library sent each request
        self.times: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def overrides(self, key_env: str = "FAKE_KEY") -> list[str]:
        return [
            "lm=openai_compatible",
            f"lm.api_base={self.url}",
            "lm.model=self-hosted/fake",
            f"lm.api_key_env={key_env}",
        ]

    def __enter__(self) -> FakeProvider:
        self._server = _Server(("127.0.0.1", self.port), type("Handler", (_Handler,), {"fake": self}))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # releases hung handlers at once
        self._server.shutdown()
        self._server.server_close()

    def _next(self, auth: str, user_agent: str = "") -> tuple[int, int]:
        """This request's number and the status it gets."""
        with self._lock:
            number = self.requests
            self.requests += 1
            self.auth.append(auth)
            self.user_agents.append(user_agent)
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung handler never keeps the process alive
    request_queue_size = 128  # many Spark tasks / serving workers connect at once


class _Handler(BaseHTTPRequestHandler):
    fake: FakeProvider
    # Keep-alive, as OpenAI, vLLM and llama.cpp's server do: a client's pooled connection carries its next request,
    # instead of a TCP connection (and a server thread) per call.
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: with Nagle's algorithm on, the body waits for the client's delayed
    # ACK (+40 ms a request on a kept-alive connection). Servers set TCP_NODELAY; so does this one.
    disable_nagle_algorithm = True

    def do_POST(self):  # noqa: N802 (http.server's naming)
        fake = self.fake
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        auth = self.headers.get("Authorization", "")
        number, status = fake._next(auth, self.headers.get("User-Agent", ""))
        messages = body.get("messages", [])
        if fake.hang_all or "HANG" in (_text(messages[-1]["content"]) if messages else ""):
            fake._stop.wait(fake.hang_s)  # bounded: at most hang_s, less if the provider stops
        elif fake.latency:
            time.sleep(fake.latency)
        if status == 429:
            retry = {"Retry-After": str(fake.retry_after)}
            return self._send(429, _error("rate limited", "rate_limit_exceeded"), retry)
        if status == 401:
            return self._send(401, _error(f"invalid credentials: received Authorization: {auth}", "invalid_api_key"))
        if status != 200:
            return self._send(500, _error("the fake provider is failing on purpose", "server_error"))
        content = answer(messages)
        if body.get("stream"):
            return self._stream(body, content, f"fake-{number}")
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        reply = {
            "id": f"fake-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [choice],
            "usage": USAGE,
        }
        self._send(200, reply)

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
            self.close_connection = True

    def _stream(self, body: dict, content: str, reply_id: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")  # no Content-Length: the stream ends when the connection does
        self.end_headers()
        self.close_connection = True

        def send(delta: dict, finish: str | None = None):
            chunk = {
                "id": reply_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        try:
            for start in range(0, len(content), CHUNK_CHARS):
                if start and self.fake.chunk_s:
                    time.sleep(self.fake.chunk_s)
                send({"role": "assistant", "content": content[start : start + CHUNK_CHARS]})
            send({}, finish="stop")
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (a stream's timeout)
            pass

    def log_message(self, *args):  # quiet: thousands of requests per test
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each request takes")
    parser.add_argument("--hang-s", type=float, default=3600.0, help="seconds a message containing HANG takes")
    parser.add_argument("--chunk-s", type=float, default=0.0, help="seconds between streamed chunks")
    args = parser.parse_args()
    with FakeProvider(args.latency, chunk_s=args.chunk_s, hang_s=args.hang_s, port=args.port) as fake:
        print(f"fake OpenAI-compatible provider on {fake.url} (latency {args.latency}s)", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
