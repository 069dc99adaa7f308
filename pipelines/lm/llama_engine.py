"""A DSPy 3.4 engine that runs a GGUF model in-process with llama.cpp.

DSPy's supported way to plug in a model it does not host (`dspy.LM(..., engine=obj)`): the engine
receives one canonical `dspy.lm15.Request` and returns one `Response`; DSPy keeps the cache,
retries, history and callbacks. Declaring `supports_response_schema` makes JSONAdapter send its
output schema, which llama.cpp turns into a grammar, so a 0.5B model always emits parseable JSON
and, for a `Literal` output field, only valid labels.

    >>> engine = LlamaCppEngine(model_path="model.gguf")            # doctest: +SKIP
    >>> lm = dspy.LM("local/qwen", engine=engine, temperature=0.0)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

from dspy.clients.engines.base import validate_request
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events


class LlamaCppEngine:
    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = ("response_format", "temperature", "max_tokens", "top_p", "stop", "seed")

    def __init__(
        self,
        model_path: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        lora_path: str | None = None,
        model_name: str = "local",
    ):
        self.model_path = str(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.seed = seed
        self.lora_path = lora_path
        self.model_name = model_name
        self._llama = None
        # One llama_cpp.Llama is not safe to call from several threads, and DSPy's Evaluate and
        # optimisers call the LM from a thread pool: every use of the model goes through this lock.
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def _model(self):
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError(
                    "llama-cpp-python is not installed; install it with "
                    "`CMAKE_ARGS=-DLLAVA_BUILD=OFF pip install llama-cpp-python==0.3.36` (or `make setup`)"
                ) from exc
            self._llama = Llama(
                model_path=self.model_path,
                lora_path=self.lora_path,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                seed=self.seed,
                verbose=False,
            )
        return self._llama

    def close(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    # DSPy saves a custom engine by class path + this state (no secrets: there are none).
    def dump_state(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "seed": self.seed,
            "lora_path": self.lora_path,
            "model_name": self.model_name,
        }

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LlamaCppEngine:
        return cls(**state)

    # -- calls -------------------------------------------------------------------------------
    def complete(self, request) -> Response:
        validate_request(request)
        config = request.config
        kwargs: dict[str, Any] = {
            "messages": _chat_messages(request),
            "temperature": 0.0 if config.temperature is None else config.temperature,
            "max_tokens": config.max_tokens,
            "seed": config.seed if getattr(config, "seed", None) is not None else self.seed,
        }
        if config.top_p is not None:
            kwargs["top_p"] = config.top_p
        if config.stop:
            kwargs["stop"] = list(config.stop)
        if (response_format := _llama_response_format(config.response_format)) is not None:
            kwargs["response_format"] = response_format
        with self._lock:
            out = self._model().create_chat_completion(**kwargs)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Response(
            id=out.get("id") or f"llama-{uuid.uuid4().hex[:12]}",
            model=self.model_name,
            message=Message.assistant((TextPart(choice["message"].get("content") or ""),)),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            usage=Usage(input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens")),
        )

    def stream(self, request):
        return response_to_events(self.complete(request))


def _text(parts) -> str:
    if isinstance(parts, str):
        return parts
    return "".join(getattr(p, "text", "") or "" for p in parts)


def _chat_messages(request) -> list[dict[str, str]]:
    messages = []
    if request.system is not None:
        messages.append({"role": "system", "content": _text(request.system)})
    for m in request.messages:
        # llama.cpp's chat templates know system/user/assistant; `developer` is high-priority user text.
        role = m.role if m.role in ("system", "user", "assistant") else "user"
        messages.append({"role": role, "content": m.text or ""})
    return messages


def _llama_response_format(response_format: dict | None) -> dict | None:
    """DSPy's OpenAI-style response_format -> llama-cpp-python's (`json_object` + optional schema)."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        # OpenAI nests the schema under "json_schema"; DSPy's canonical request puts it at top level.
        schema = response_format.get("schema") or (response_format.get("json_schema") or {}).get("schema")
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    if kind == "json_object":
        return {"type": "json_object"}
    return None
