"""Measure the serving figures of issue 14: time to first token vs full answer, rows/s of a 16-row request.

    .venv/bin/python -m scripts.measure_serving --repeats 5          # from the checkout's root

Registers small models (two inputs, two outputs: a label and a free-text reply; `tests.serving.models`) in a
throwaway sqlite store and serves them with `python -m pipelines.serve`, as a user would:
- `ttft`: `serve stream=true` (MLflow's agent server), one streamed request at a time over HTTP; seconds to the
  first `output_text.delta` event and to the last `output_item.done`, for the embedded model (Qwen 0.5B,
  llama.cpp) and for the fake provider (`--latency` to the first chunk, `--chunk-s` between chunks);
- `rows`: one 16-row `/invocations` request through the fake provider (`--latency` per LM request, no streaming)
  with `serve concurrency=16` and `concurrency=1`; rows/s.
Every request has inputs never sent before and the LMs' caches are off, so no answer is replayed.
Medians are printed, every value in the JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import requests

from benchmarks.fake_provider import FakeProvider
from tests.helpers import serving_champion
from tests.serving.models import KEYWORDS, PREDICT, TWO_BY_TWO, log_served_model, provider_config

EMBEDDED = {"_target_": "pipelines.lm.local_lm", "cache": False, "max_tokens": 96}


def fresh_row(i: int) -> dict:
    word = KEYWORDS[i % len(KEYWORDS)][0]
    return {"ticket": f"{word} please, order {uuid.uuid4().hex[:6]}", "channel": ("email", "phone")[i % 2]}


def stream_once(url: str, row: dict) -> tuple[float, float]:
    """(seconds to the first text delta, seconds to the complete answer) for one streamed request."""
    body = {"input": [{"role": "user", "content": json.dumps(row)}], "stream": True}
    start, first, last = time.monotonic(), None, None
    with requests.post(f"{url}/responses", json=body, stream=True, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data: {"):
                continue
            event = json.loads(line.removeprefix("data: "))
            if event.get("type") == "response.output_text.delta" and first is None:
                first = time.monotonic() - start
            elif event.get("type") == "response.output_item.done":
                last = time.monotonic() - start
            elif "error" in event:
                raise RuntimeError(event["error"])
    return first, last


def measure_ttft(served, repeats: int, workers: int = 1) -> dict:
    overrides = ["stream=true", f"model_uri={served.uri}", "trace=false", f"workers={workers}"]
    with serving_champion(served.tracking_uri, overrides=overrides) as url:
        stream_once(url, fresh_row(0))  # warm-up: model load, first-call imports
        runs = [stream_once(url, fresh_row(i)) for i in range(repeats)]
    firsts, fulls = [r[0] for r in runs], [r[1] for r in runs]
    return {
        "ttft_s": firsts,
        "full_s": fulls,
        "median_ttft_s": statistics.median(firsts),
        "median_full_s": statistics.median(fulls),
    }


def measure_rows(served, concurrency: int, repeats: int, n_rows: int = 16) -> dict:
    overrides = [f"model_uri={served.uri}", f"concurrency={concurrency}"]
    rates = []
    with serving_champion(served.tracking_uri, overrides=overrides) as url:
        for r in range(repeats + 1):  # the first is a warm-up
            rows = [fresh_row(i) for i in range(n_rows)]
            start = time.monotonic()
            response = requests.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=600)
            elapsed = time.monotonic() - start
            response.raise_for_status()
            labels = [p["label"] for p in response.json()["predictions"]]
            assert labels == [KEYWORDS[i % len(KEYWORDS)][1] for i in range(n_rows)], labels
            if r:
                rates.append(n_rows / elapsed)
    return {"rows_per_s": rates, "median_rows_per_s": statistics.median(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=["ttft", "rows", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.2, help="fake provider: seconds to the first chunk")
    parser.add_argument("--chunk-s", type=float, default=0.02, help="fake provider: seconds between chunks")
    parser.add_argument("--workers", type=int, default=1, help="ttft: `serve workers=N` for the streaming server")
    parser.add_argument("--skip-embedded", action="store_true", help="no embedded-model figure (no llama.cpp here)")
    args = parser.parse_args()

    results: dict = {"args": vars(args)}
    store = Path(tempfile.mkdtemp(prefix="measure-serving-"))
    with FakeProvider(args.latency, chunk_s=args.chunk_s) as fake:
        provider = log_served_model(store / "store", TWO_BY_TWO, PREDICT, provider_config(fake.url), name="fake")
        if args.what in ("ttft", "all"):
            if not args.skip_embedded:
                embedded = log_served_model(store / "store", TWO_BY_TWO, PREDICT, EMBEDDED, name="embedded")
                results["ttft_embedded"] = measure_ttft(embedded, args.repeats, args.workers)
            results["ttft_fake_provider"] = measure_ttft(provider, args.repeats, args.workers)
        if args.what in ("rows", "all"):
            results["rows_concurrency_16"] = measure_rows(provider, 16, args.repeats)
            results["rows_concurrency_1"] = measure_rows(provider, 1, args.repeats)

    for name, values in results.items():
        if name != "args":
            medians = {k: round(v, 3) for k, v in values.items() if k.startswith("median")}
            print(f"{name:24s} {medians}")
    if "rows_concurrency_1" in results:
        speedup = (
            results["rows_concurrency_16"]["median_rows_per_s"] / results["rows_concurrency_1"]["median_rows_per_s"]
        )
        print(f"16-way vs serial: {speedup:.1f}x rows/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
