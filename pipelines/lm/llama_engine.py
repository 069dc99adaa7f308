"""A DSPy 3.4 engine that runs a GGUF model in-process with llama.cpp.

DSPy's supported way to plug in a model it does not host (`dspy.LM(..., engine=obj)`): the engine
receives one canonical `dspy.lm15.Request` and returns one `Response`; DSPy keeps the cache,
retries, history and callbacks. Declaring `supports_response_schema` makes JSONAdapter send its
output schema, which llama.cpp turns into a grammar, so a 0.5B model always emits parseable JSON
and, for a `Literal` output field, only valid labels.

    >>> engine = LlamaCppEngine(model_path="model.gguf")            # doctest: +SKIP
    >>> lm = dspy.LM("local/qwen", engine=engine, temperature=0.0)   # doctest: +SKIP

Fine-tuned variants share the engine: a model id `local/<name>:ft-<digest>` (what our fine-tuning
provider returns, and what `LM.copy(model=...)` routes here) runs the base GGUF with the LoRA adapter
registered under that digest. DSPy's cache keys on the model id, so base and adapted answers never mix.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dspy.clients.engines.base import validate_request
from dspy.lm15 import (
    Message,
    Response,
    StreamDeltaEvent,
    StreamEndEvent,
    StreamStartEvent,
    TextDelta,
    TextPart,
    Usage,
)


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
        adapters: dict[str, str] | None = None,
        model_name: str = "local",
        max_loaded: int = 2,
        n_contexts: int = 1,
    ):
        if n_contexts < 1:
            raise ValueError(f"n_contexts must be at least 1, got {n_contexts}")
        self.model_path = str(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        # Contexts per loaded model, each decoding one call at a time. A call alone gets all n_threads; calls side by
        # side share them (ContextPool): on few cores, single-thread contexts side by side decode more tokens per
        # second than one context on all of them.
        self.n_contexts = n_contexts
        self.seed = seed
        self.adapters: dict[str, str] = dict(adapters or {})  # digest -> GGUF LoRA adapter path
        self.model_name = model_name
        # Loaded models, most recent last: the base and each adapter has its own llama.cpp contexts
        # (the base weights are mmapped, so they are shared in memory); bounded to cap KV-cache memory.
        self.max_loaded = max_loaded
        self._llamas: OrderedDict[str | None, ContextPool] = OrderedDict()
        # Guards loading and unloading; calls run outside it, each on a context of its own (ContextPool).
        self._lock = threading.RLock()

    # -- adapters ----------------------------------------------------------------------------
    def register_adapter(self, digest: str, path: str) -> None:
        self.adapters[digest] = str(path)

    def adapter_for(self, model: str | None) -> str | None:
        """The adapter path a model id asks for (None: the base model)."""
        digest = adapter_digest(model)
        if digest is None:
            return None
        if digest not in self.adapters:
            raise KeyError(
                f"Model {model!r} names LoRA adapter {digest!r}, which this engine does not know "
                f"(known: {sorted(self.adapters) or 'none'}); load the model with its adapter (lm.lora_path)"
            )
        return self.adapters[digest]

    # -- lifecycle ---------------------------------------------------------------------------
    def _contexts(self, adapter: str | None = None) -> ContextPool:
        with self._lock:
            if adapter in self._llamas:
                self._llamas.move_to_end(adapter)
                return self._llamas[adapter]
            try:
                from llama_cpp import Llama
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError(
                    "llama-cpp-python is not installed; install it with "
                    "`CMAKE_ARGS=-DLLAVA_BUILD=OFF pip install llama-cpp-python==0.3.36` (or `make setup`)"
                ) from exc
            while len(self._llamas) >= self.max_loaded:
                _, oldest = self._llamas.popitem(last=False)
                oldest.close()
            with plain_cpu_buffers():
                llamas = [
                    Llama(
                        model_path=self.model_path,
                        lora_path=adapter,
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        n_threads_batch=self.n_threads,
                        seed=self.seed,
                        verbose=False,
                    )
                    for _ in range(self.n_contexts)
                ]
            self._llamas[adapter] = ContextPool(llamas, threads=self.n_threads)
            return self._llamas[adapter]

    @contextmanager
    def _context(self, adapter: str | None) -> Iterator[Any]:
        """A free llama.cpp context of the model, held for one call; waits while all of them are busy."""
        while True:
            try:
                with self._contexts(adapter).context() as llama:
                    yield llama
                    return
            except PoolClosed:  # unloaded while this call waited: load it again
                continue

    def loaded(self, model: str | None = None) -> bool:
        """Whether the base (or the adapter `model` names) has its llama.cpp context in memory now."""
        with self._lock:
            return self.adapter_for(model) in self._llamas

    def load(self, model: str | None = None) -> None:
        """Load the base (or the adapter `model` names) now; a no-op when loaded. (Provider.launch)"""
        self._contexts(self.adapter_for(model))

    def unload(self, model: str | None = None) -> None:
        """Free the llama.cpp context for `model`; a no-op when not loaded. (Provider.kill)"""
        with self._lock:
            contexts = self._llamas.pop(self.adapter_for(model), None)
            if contexts is not None:
                contexts.close()

    def close(self) -> None:
        with self._lock:
            while self._llamas:
                self._llamas.popitem()[1].close()

    def __deepcopy__(self, memo):
        # A loaded model is a shared resource: DSPy deep-copies programs (and their LMs) freely, and
        # every copy must reach the same contexts and adapter registry rather than a half-copied lock.
        return self

    # DSPy saves a custom engine by class path + this state (no secrets: there are none).
    def dump_state(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "seed": self.seed,
            "adapters": dict(self.adapters),
            "model_name": self.model_name,
            "max_loaded": self.max_loaded,
            "n_contexts": self.n_contexts,
        }

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LlamaCppEngine:
        return cls(**state)

    # -- calls -------------------------------------------------------------------------------
    def complete(self, request) -> Response:
        validate_request(request)
        kwargs = self._completion_kwargs(request)
        adapter = self.adapter_for(request.model)
        with self._context(adapter) as llama:
            out = llama.create_chat_completion(**kwargs)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Response(
            id=out.get("id") or f"llama-{uuid.uuid4().hex[:12]}",
            model=request.model or self.model_name,
            message=Message.assistant((TextPart(choice["message"].get("content") or ""),)),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            usage=Usage(input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens")),
        )

    def _completion_kwargs(self, request) -> dict[str, Any]:
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
        return kwargs

    def stream(self, request):
        """Token by token (DSPy calls this under `dspy.streamify`); one context is held until the last token."""
        validate_request(request)
        kwargs = self._completion_kwargs(request)
        adapter = self.adapter_for(request.model)
        with self._context(adapter) as llama:
            yield StreamStartEvent(id=f"llama-{uuid.uuid4().hex[:12]}", model=request.model or self.model_name)
            finish = "stop"
            for chunk in llama.create_chat_completion(**kwargs, stream=True):
                choice = chunk["choices"][0]
                if text := choice["delta"].get("content"):
                    yield StreamDeltaEvent(delta=TextDelta(text=text, part_index=0))
                if choice.get("finish_reason") == "length":
                    finish = "length"
            yield StreamEndEvent(finish_reason=finish)


class PoolClosed(RuntimeError):
    """The model was unloaded while a call waited for one of its contexts."""


@contextmanager
def plain_cpu_buffers() -> Iterator[None]:
    """Models loaded inside keep their weights in plain CPU buffers, not llama.cpp's "extra" ones (AMX, repacked).

    On a CPU with AMX (Sapphire Rapids and later) the bundled ggml's AMX matmul segfaults on the first decode of
    the Q4_K_M models. llama.cpp's `use_extra_bufts` turns those buffers off, but llama-cpp-python 0.3.36 does not
    expose it, so its default model params are patched while `Llama` objects are built (callers hold the engine's
    lock; the patch is undone on exit)."""
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params

    def params():
        value = original()
        value.use_extra_bufts = False
        return value

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original


class ContextPool:
    """The llama.cpp contexts of one loaded model. A `llama_cpp.Llama` is not safe to call from two threads, and
    DSPy's Evaluate and optimisers call the LM from a thread pool: each call holds one context to itself."""

    def __init__(self, llamas: list[Any], threads: int | None = None):
        self.size = len(llamas)
        self.threads = threads  # shared by the busy contexts; None leaves each context's own setting
        self._free = list(llamas)
        self._changed = threading.Condition()
        self._closed = False

    @contextmanager
    def context(self) -> Iterator[Any]:
        with self._changed:
            while not self._free:
                if self._closed:
                    raise PoolClosed
                self._changed.wait()
            if self._closed:
                raise PoolClosed
            llama = self._free.pop()
            busy = self.size - len(self._free)
        if self.threads:
            # This call's share of the threads, fixed for the call: all of them alone, an equal part beside others.
            import llama_cpp

            share = max(1, self.threads // busy)
            llama_cpp.llama_set_n_threads(llama.ctx, share, share)
        try:
            yield llama
        finally:
            with self._changed:
                if self._closed:  # unloaded mid-call: the last user frees it
                    llama.close()
                else:
                    self._free.append(llama)
                    self._changed.notify()

    def close(self) -> None:
        """Free the idle contexts now and the busy ones as their calls end; waiting calls raise PoolClosed."""
        with self._changed:
            self._closed = True
            for llama in self._free:
                llama.close()
            self._free.clear()
            self._changed.notify_all()


FT_MARK = ":ft-"


def adapter_digest(model: str | None) -> str | None:
    """`local/qwen:ft-1a2b3c` -> `1a2b3c`; None for a base model id."""
    if not model or FT_MARK not in model:
        return None
    return model.rsplit(FT_MARK, 1)[1]


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
