"""Guard overhead per request, measured (not a test): `python -m tests.guards.overhead`.

Medians over many calls, on one typical customer message: the `strict` guards' pass alone (inputs and
outputs), then a whole `predict` call and a whole served request (MLflow's scoring app, in-process) of a
model trained with the fake LM, with the model's guards and with them removed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

ROW = {"text": "Hi, my flight LX 318 was cancelled, I want a refund to my card; mail me at ann.lee@example.org"}


def median_ms(fn, n: int) -> float:
    for _ in range(min(20, n)):  # warm-up
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    import mlflow
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    from pipelines.guards import GuardSet
    from pipelines.train import train
    from tests.conftest import compose_cfg

    cfg = compose_cfg("train", Path(tempfile.mkdtemp()), ["optimizer=none", "guard=strict"])
    guards = GuardSet.from_config(cfg.guard)

    def guard_pass():
        guards.check(ROW, "inputs", ["text"])
        guards.check({"label": "refund_request"}, "outputs", [])  # a label output: nothing to scan

    print(f"guard pass (strict: pii + injection + max_length), inputs: {median_ms(guard_pass, 5000):.4f} ms")
    reply = {"reply": ROW["text"]}
    print(f"guard pass, one text output: {median_ms(lambda: guards.check(reply, 'outputs', ['reply']), 5000):.4f} ms")

    model = mlflow.pyfunc.load_model(train(cfg).model_uri)
    mlflow.dspy.autolog(disable=True)  # train's session traced every call into sqlite: ~280 ms that is not ours
    frame = pd.DataFrame([ROW])
    client = TestClient(scoring_server.init(model))
    body = {"dataframe_split": {"columns": ["text"], "data": [[ROW["text"]]]}}
    inner = model.unwrap_python_model()
    for label, active in (("with guards", inner.guards), ("without guards", GuardSet())):
        inner.guards = active
        predict = median_ms(lambda: model.predict(frame), 300)
        served = median_ms(lambda: client.post("/invocations", json=body), 200)
        print(f"{label}: predict {predict:.3f} ms, served request {served:.3f} ms (fake LM, no cache)")


if __name__ == "__main__":
    main()
