"""A fake OpenAI-compatible chat server on loopback, with a fixed latency per request.

Stands in for vLLM / llama.cpp's server in the integration tests and the throughput measurements, so
they exercise the real provider path (LiteLLM over HTTP, keys from the environment, DSPy's cache) and
scale the way a real LM server with spare capacity does: every request sleeps `latency` seconds in
its own thread, so N concurrent callers get N times the throughput, and anything below that is ours.

    python -m tests.integration.fake_openai --port 8011 --latency 0.05
    # then: lm=openai_compatible lm.api_base=http://127.0.0.1:8011/v1 lm.model=openai/fake

It answers every output field the JSON adapter asks for: a label by the keyword rules of
`tests.fakes` (else the first allowed label), other fields a fixed string. A message containing
`HANG` sleeps `hang_s` instead, to play an LM that hangs.

A request with `"stream": true` gets the same answer as Server-Sent Events, a few characters per
`chat.completion.chunk` (what LiteLLM reads from OpenAI): the first after `latency`, the rest `chunk_s`
apart, like a server that decodes one token at a time.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fakes import TRAVEL_RULES

# JSONAdapter lists the outputs in its system message: "1. `label` (Literal['a', 'b'])".
_OUTPUT_FIELD = re.compile(r"^\d+\. `(\w+)` \(([^)\n]*)\)", re.M)
_INPUT_TEXT = re.compile(r"\[\[ ## \w+ ## \]\]\s*(.*?)(?:\n\n|\[\[|$)", re.S)


def _outputs(system: str) -> dict[str, list[str]]:
    """Output field -> allowed labels (empty for free text), from the system message's output section."""
    section = system.split("Your output fields are:", 1)[-1].split("All interactions", 1)[0]
    return {name: re.findall(r"'([^']+)'", kind) for name, kind in _OUTPUT_FIELD.findall(section)}


def answer(messages: list[dict]) -> str:
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    last = messages[-1]["content"] if messages else ""
    text = " ".join(_INPUT_TEXT.findall(last)).lower() or last.lower()
    out = {}
    for name, labels in (_outputs(system) or {"label": []}).items():
        if labels:
            out[name] = next((lab for key, lab in TRAVEL_RULES.items() if key in text and lab in labels), labels[0])
        else:
            out[name] = "A fixed answer."
    return json.dumps(out)


CHUNK_CHARS = 4  # about one token of JSON per streamed chunk


def make_handler(latency: float, hang_s: float, counter: list[int], chunk_s: float = 0.0):
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as OpenAI, vLLM and llama.cpp's server do: a client's pooled connection carries its next
        # request, instead of a TCP connection (and a server thread) per call.
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes: with Nagle's algorithm on, the body waits for the client's
        # delayed ACK (+40 ms a request on a kept-alive connection). Servers set TCP_NODELAY; so does this one.
        disable_nagle_algorithm = True

        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            messages = body.get("messages", [])
            counter[0] += 1  # a rough count is enough (no lock: += on a list cell under the GIL)
            time.sleep(hang_s if "HANG" in (messages[-1]["content"] if messages else "") else latency)
            content = answer(messages)
            if body.get("stream"):
                return self._stream(body, content, f"fake-{counter[0]}")
            reply = {
                "id": f"fake-{counter[0]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, body: dict, content: str, reply_id: str):
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

            for start in range(0, len(content), CHUNK_CHARS):
                if start and chunk_s:
                    time.sleep(chunk_s)
                send({"role": "assistant", "content": content[start : start + CHUNK_CHARS]})
            send({}, finish="stop")
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *args):  # quiet: thousands of requests per test
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many Spark tasks / serving workers connect at once


@contextmanager
def fake_openai(
    latency: float = 0.0, hang_s: float = 3600.0, port: int = 0, chunk_s: float = 0.0
) -> Iterator[tuple[str, list[int]]]:
    """In-process server on a thread; yields (api_base, request counter)."""
    counter = [0]
    server = _Server(("127.0.0.1", port), make_handler(latency, hang_s, counter, chunk_s))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", counter
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each request takes")
    parser.add_argument("--hang-s", type=float, default=3600.0, help="seconds a message containing HANG takes")
    parser.add_argument("--chunk-s", type=float, default=0.0, help="seconds between streamed chunks")
    args = parser.parse_args()
    server = _Server(("127.0.0.1", args.port), make_handler(args.latency, args.hang_s, [0], args.chunk_s))
    print(f"fake OpenAI server on http://127.0.0.1:{args.port}/v1 (latency {args.latency}s)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
