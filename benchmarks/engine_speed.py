"""Our llama.cpp engine through `dspy.LM` vs `llama_cpp.Llama` called directly, optionally beside busy CPUs.

>>> rows = measure_engine(lm, prompt="Name three fees.", calls=5, repeats=3, burners=2)   # doctest: +SKIP
>>> [r.name for r in rows], round(rows[0].ratio, 2)                                     # doctest: +SKIP
(['engine', 'engine_2_burners'], 1.01)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dspy

from benchmarks.ratios import Row


def timed(fn, prompt: str) -> float:
    start = time.perf_counter()
    fn(prompt)
    return time.perf_counter() - start


def call_by_call(pair: tuple, prompts: list[str]) -> dict:
    """Each function's median seconds per call, the two taking turns call by call: whatever the machine does
    meanwhile (burners reaching speed, another process) falls on both sides alike, not on whichever runs first."""
    times: dict = {fn: [] for fn in pair}
    for prompt in prompts:
        for fn in pair:
            times[fn].append(timed(fn, prompt))
    return {fn: statistics.median(t) for fn, t in times.items()}


@contextmanager
def burning(n: int) -> Iterator[None]:
    """`n` busy-loop processes for the duration of the block: a CPU shared with other work, on purpose."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)  # let them reach full speed
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def measure_engine(lm: dspy.LM, *, prompt: str, calls: int, repeats: int, burners: int = 0) -> list[Row]:
    """Seconds per call: our engine through `lm` (cache off) vs a raw `Llama` on the same file and settings.
    With `burners`, also our engine beside that many busy CPU processes vs without them."""
    from llama_cpp import Llama

    from pipelines.lm.llama_engine import plain_cpu_buffers

    engine = lm.engine
    with plain_cpu_buffers():  # as our engine loads it: on AMX CPUs the default buffers crash llama.cpp's decode
        raw = Llama(
            model_path=engine.model_path,
            n_ctx=engine.n_ctx,
            n_threads=engine.n_threads,
            seed=engine.seed,
            verbose=False,
        )
    max_tokens = lm.kwargs["max_tokens"]
    texts: dict[str, list[str]] = {"engine": [], "raw": []}

    def ours(text: str) -> None:
        texts["engine"].append(lm(text)[0])  # one user message, as below

    def direct(text: str) -> None:
        out = raw.create_chat_completion(
            messages=[{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0.0, seed=engine.seed
        )
        texts["raw"].append(out["choices"][0]["message"]["content"])

    def both(r: int, tag: str) -> dict:
        prompts = [f"{prompt} (request {tag}{r}.{i})" for i in range(calls)]
        pair = (ours, direct) if r % 2 == 0 else (direct, ours)  # alternate who goes first
        return call_by_call(pair, prompts)

    row = Row("engine", "s/call", "raw llama-cpp-python", details={"max_tokens": max_tokens, "calls": calls})
    burnt = Row(f"engine_{burners}_burners", "s/call", "our engine, no burners", details={"raw_ratios": []})
    ours(prompt), direct(prompt)  # warm-up: both contexts loaded, the prompt's template prefix evaluated
    for r in range(repeats):
        quiet = both(r, "q")
        row.add(quiet[ours], quiet[direct])
        if burners:
            with burning(burners):
                busy = both(r, "b")
            burnt.add(busy[ours], quiet[ours])
            burnt.details["raw_ratios"].append(busy[direct] / quiet[direct])
    row.details["same_answers"] = texts["engine"] == texts["raw"]
    raw.close()
    return [row, burnt] if burners else [row]


def measure_contexts(
    lms: dict[int, dspy.LM], *, program: dspy.Module, examples: list, task, adapter, repeats: int
) -> Row:
    """An evaluation on the embedded LM with its contexts side by side (`num_threads` = `lm.n_contexts`) vs one
    context scoring the rows one at a time: the same rows, cache off, untraced, the two taking turns."""
    from pipelines.evaluation.runner import evaluate_program

    (one, one_lm), (many, many_lm) = sorted(lms.items())
    row = Row("contexts", "s", "one llama.cpp context, rows one at a time", details={"n": len(examples)})
    row.details["n_contexts"] = many
    scores: dict[int, list] = {}

    def evaluate(k: int, lm: dspy.LM, rows: list) -> float:
        start = time.perf_counter()
        out = evaluate_program(
            program, rows, task.metric, outputs=task.contract.output_names, lm=lm, adapter=adapter, num_threads=k
        )
        scores[k] = list(out.table["score"])
        return time.perf_counter() - start

    for k, lm in lms.items():  # warm-up: every context loaded, the prompt's template prefix evaluated
        evaluate(k, lm, examples[: 2 * k])
    for r in range(repeats):
        pair = ((one, one_lm), (many, many_lm)) if r % 2 == 0 else ((many, many_lm), (one, one_lm))
        timed_s = {k: evaluate(k, lm, examples) for k, lm in pair}
        row.add(timed_s[many], timed_s[one])
    row.details["same_scores"] = scores[one] == scores[many]
    return row
