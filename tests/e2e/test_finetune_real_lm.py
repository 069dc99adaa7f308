"""Fine-tuning for real, on SmolLM2-135M-Instruct (CPU, ~1 min per fine-tune): the provider trains a LoRA
adapter and the loss falls; llama.cpp answers with it; a whole BetterTogether run with the weight step
really executed is logged, registered, loaded back from the registry and served over HTTP, offline,
without the adapters cache it was trained into (the adapter travels inside the model)."""

from __future__ import annotations

import shutil
from statistics import mean

import mlflow
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from pipelines.lm import local_lm
from tests.helpers import serving_champion, smollm2_path

pytestmark = pytest.mark.slow

SYSTEM = "Answer with the code word for the message's topic."
TOPICS = {
    "zorp": ["my flight is late", "the plane was delayed", "departure delayed again", "delay on my flight"],
    "blick": ["I lost my bag", "my suitcase is missing", "luggage did not arrive", "where is my baggage"],
    "fnord": ["cancel my booking", "I want to cancel the trip", "please cancel reservation", "cancel my ticket"],
}
ROWS = [
    {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": t},
            {"role": "assistant", "content": w},
        ]
    }
    for w, texts in TOPICS.items()
    for t in texts
]


def ask(lm, text: str) -> str:
    return lm(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}])[0].strip()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    adapters = tmp_path_factory.mktemp("adapters")
    settings = {"epochs": 5, "learning_rate": 5e-4, "batch_size": 2, "max_seq_len": 128}
    lm = local_lm(
        model="smollm2-135m",
        model_path=smollm2_path(),
        n_ctx=512,
        max_tokens=8,
        cache=False,
        finetune=settings,
        adapters_dir=str(adapters),
    )
    lm.kill()  # nothing loaded yet: a no-op
    job = lm.finetune(ROWS, "chat")
    result = job.result()
    if isinstance(result, Exception):
        raise result
    return lm, result, job, adapters


def test_the_provider_fine_tunes_and_the_loss_falls(tuned):
    lm, new_lm, job, adapters = tuned
    assert job.status() == "succeeded"
    assert len(job.losses) == 30  # 12 rows / batch 2 x 5 epochs
    assert mean(job.losses[-5:]) < 0.25 * mean(job.losses[:5]), job.losses
    digest = new_lm.model.rsplit(":ft-", 1)[1]
    assert new_lm.model == f"local/smollm2-135m:ft-{digest}"
    adapter = adapters / f"{digest}.gguf"
    assert adapter.read_bytes()[:4] == b"GGUF"


def test_the_adapted_model_loads_in_llama_cpp_and_answers(tuned):
    lm, new_lm, _, _ = tuned
    probes = [(texts[0], word) for word, texts in TOPICS.items()] + [(TOPICS["blick"][2], "blick")]
    base_answers = [ask(lm, text) for text, _ in probes]
    tuned_answers = [ask(new_lm, text) for text, _ in probes]
    assert not set(base_answers) & set(TOPICS), base_answers  # the base model never says a code word
    assert sum(a == w for a, (_, w) in zip(tuned_answers, probes, strict=True)) >= 3, tuned_answers
    # launch/kill are idempotent, and a killed model comes back on the next call.
    for _ in range(2):
        new_lm.launch()
    for _ in range(2):
        new_lm.kill()
    assert ask(new_lm, probes[0][0]) == tuned_answers[0]
    # The registered-model route: a fresh LM from the adapter file alone gives the same model and answers.
    path = new_lm.provider.adapter_path(new_lm.model)
    again = local_lm(
        model="smollm2-135m", model_path=smollm2_path(), n_ctx=512, max_tokens=8, cache=False, lora_path=path
    )
    assert again.model == new_lm.model
    assert [ask(again, text) for text, _ in probes] == tuned_answers


@pytest.fixture(scope="module")
def bettertogether_run(tmp_path_factory):
    from pipelines.optimize import optimize
    from pipelines.register import register
    from tests.conftest import compose_cfg, reset_mlflow_state

    reset_mlflow_state()
    tmp = tmp_path_factory.mktemp("bt")
    overrides = [
        "optimizer=bettertogether",
        'optimizer.compile_args.strategy="p -> w"',
        # Without a valset BetterTogether keeps the LAST program (the fine-tuned one), whatever it scores.
        "optimizer.uses_valset=false",
        "+optimizer.compile_args.valset_ratio=0",
        f"lm.model_path={smollm2_path()}",
        "lm.model=smollm2-135m",
        "lm.n_ctx=2048",
        f"lm.adapters_dir={tmp}/adapters",
        f"lm.finetune.checkpoint_dir={tmp}/checkpoints",
        "lm.finetune.epochs=2",
        "task.data.labels=[lost_luggage,cancel_booking]",  # 2 labels: a 135M model gets some right to train on
        "task.data.train_size=8",
        "task.data.val_size=2",
        "task.data.dev_size=6",
        "task.data.test_size=6",
    ]
    cfg = compose_cfg("optimize", tmp, overrides, fake=False)
    result = optimize(cfg)
    registered = register(compose_cfg("register", tmp, overrides[5:], fake=False), run_id=result.run_id)
    yield cfg, result, registered, tmp
    while mlflow.active_run():
        mlflow.end_run()


def test_bettertogether_really_fine_tunes_and_logs_it(bettertogether_run):
    _, result, _, _ = bettertogether_run
    client = MlflowClient()
    run = client.get_run(result.run_id)
    m, tags = run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["compile_step_error"] == "false"  # the weight step ran; no quiet fallback
    assert tags["finetuned_model"].startswith("local/smollm2-135m:ft-")
    assert m["finetune_train_rows"] >= 1 and m["finetune_steps"] >= 1
    losses = client.get_metric_history(result.run_id, "finetune_loss")
    assert len(losses) == m["finetune_steps"]
    assert {"compile/stage_wall_s", "finetune_train_s", "finetune_peak_rss_mb"} <= set(m)
    assert sorted(w.step for w in client.get_metric_history(result.run_id, "compile/stage_wall_s")) == [1, 2]
    digest = tags["finetuned_model"].rsplit(":ft-", 1)[1]
    logged = {a.path for a in client.list_artifacts(result.run_id, "finetune")}
    assert {f"finetune/{digest}.gguf", f"finetune/finetune-{digest}.json"} <= logged


def test_the_registered_champion_serves_the_fine_tuned_weights(bettertogether_run):
    from pipelines.registry.versions import load_program

    cfg, result, registered, tmp = bettertogether_run
    assert registered.promoted
    tuned = MlflowClient().get_run(result.run_id).data.tags["finetuned_model"]
    shutil.rmtree(tmp / "adapters")  # the model must carry its own adapter
    uri = f"models:/{cfg.registry.name}@champion"
    loaded = load_program(uri)
    assert loaded.lm.model == tuned
    model = mlflow.pyfunc.load_model(uri)
    texts = ["my suitcase never arrived", "please cancel my booking", "where is my luggage?"]
    local = model.predict(pd.DataFrame({"text": texts}))["label"].tolist()
    assert set(local) <= {"lost_luggage", "cancel_booking"}

    with serving_champion(cfg.tracking.uri) as url:
        served = requests.post(f"{url}/invocations", json={"inputs": {"text": texts}}, timeout=120)
        assert served.status_code == 200, served.text
        assert [p["label"] for p in served.json()["predictions"]] == local  # same weights, same answers
