"""The embedded engine's contexts: calls side by side each hold a context of their own and share the threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from dspy.lm15 import Config, Message, Request

from pipelines.lm.llama_engine import ContextPool, LlamaCppEngine, PoolClosed

from .test_lm_layer import FakeLlama


class MeetingLlama(FakeLlama):
    """Answers only once `parties` calls are inside create_chat_completion at the same time (or times out)."""

    def __init__(self, meeting: threading.Barrier, timeout: float):
        super().__init__()
        self.meeting, self.timeout = meeting, timeout
        self.ctx = object()  # what llama_set_n_threads receives

    def create_chat_completion(self, **kwargs):
        self.meeting.wait(timeout=self.timeout)
        return super().create_chat_completion(**kwargs)


def ask(engine: LlamaCppEngine, text: str = "hi"):
    return engine.complete(Request(model="local/m", messages=(Message.user(text),), config=Config(max_tokens=8)))


def test_two_contexts_answer_two_calls_at_once(tmp_path):
    meeting = threading.Barrier(2)
    # the timeout is reached only if the calls never meet: generous, so a loaded machine cannot fail this
    llamas = [MeetingLlama(meeting, timeout=60), MeetingLlama(meeting, timeout=60)]
    engine = LlamaCppEngine(model_path=str(tmp_path / "m.gguf"), n_contexts=2)
    engine._llamas[None] = ContextPool(llamas)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda i: ask(engine, f"q{i}"), range(2)))  # each call waits for the other
    assert [a.message.text for a in answers] == ['{"label": "a"}'] * 2
    assert sorted(len(llama.calls) for llama in llamas) == [1, 1]  # one call on each context


def test_one_context_runs_calls_one_at_a_time(tmp_path):
    meeting = threading.Barrier(2)
    engine = LlamaCppEngine(model_path=str(tmp_path / "m.gguf"))
    # the first call waits for a second that can never join it; how long it waits does not change the outcome
    engine._llamas[None] = ContextPool([MeetingLlama(meeting, timeout=2)])
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(ask, engine, f"q{i}") for i in range(2)]
        # the second call never reaches the context while the first holds it: the first times out alone
        errors = [f.exception() for f in futures]
    assert all(isinstance(e, threading.BrokenBarrierError) for e in errors)


def test_a_call_alone_gets_every_thread_and_calls_side_by_side_share_them(monkeypatch):
    import llama_cpp

    shares = []
    monkeypatch.setattr(llama_cpp, "llama_set_n_threads", lambda ctx, n, n_batch: shares.append((n, n_batch)))
    a, b = FakeLlama(), FakeLlama()
    a.ctx = b.ctx = object()
    pool = ContextPool([a, b], threads=4)
    with pool.context():
        with pool.context():
            pass
    with pool.context():
        pass
    assert shares == [(4, 4), (2, 2), (4, 4)]


def test_unloading_frees_a_busy_context_when_its_call_ends_and_waiting_calls_reload(tmp_path):
    pool = ContextPool([busy := FakeLlama()])
    waiter_error: list[BaseException] = []

    def wait_for_a_context():
        try:
            with pool.context():
                pass
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            waiter_error.append(exc)

    with pool.context() as llama:
        waiter = threading.Thread(target=wait_for_a_context)
        waiter.start()
        pool.close()
        waiter.join()  # closing wakes it, or it finds the pool already closed
        assert not llama.closed  # still in use
    assert busy.closed  # freed as its call ended
    assert [type(e) for e in waiter_error] == [PoolClosed]


def test_a_call_that_finds_its_model_unloaded_loads_it_again(tmp_path):
    unloaded = ContextPool([FakeLlama(content="old")])
    unloaded.close()
    pools = [unloaded, ContextPool([FakeLlama(content="again")])]

    class Engine(LlamaCppEngine):
        def _contexts(self, adapter=None):  # what loading returns: first the pool unloaded meanwhile, then a new one
            return pools.pop(0)

    assert ask(Engine(model_path=str(tmp_path / "m.gguf"))).message.text == "again"
    assert not pools


def test_n_contexts_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="n_contexts must be at least 1"):
        LlamaCppEngine(model_path=str(tmp_path / "m.gguf"), n_contexts=0)


def test_models_load_without_the_extra_cpu_buffers_and_the_default_comes_back():
    """On AMX CPUs the bundled ggml's AMX matmul segfaults on the first decode: models load in plain buffers."""
    from pipelines.lm.llama_engine import plain_cpu_buffers

    lib = pytest.importorskip("llama_cpp.llama_cpp")
    assert lib.llama_model_default_params().use_extra_bufts
    with plain_cpu_buffers():
        assert not lib.llama_model_default_params().use_extra_bufts
    assert lib.llama_model_default_params().use_extra_bufts
