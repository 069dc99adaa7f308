"""Does a served model answer as the benchmark measured? Same rows in, predictions compared row by row.

    python -m benchmarks.agreement outputs/bench/<run>/bench.json knn_k8 http://127.0.0.1:5001 [--rows 40]

Posts each scored row's inputs (kept in `bench.json`) to `/invocations` of `mlflow models serve` (one row a
request: a slow row never hits the server's timeout for the others) and counts the rows whose answer
differs from the recipe's benchmark prediction. Exit status 1 when any does.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path


def served_answer(url: str, inputs: dict, timeout_s: float = 300.0) -> dict:
    body = json.dumps({"dataframe_records": [inputs]}).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/invocations", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())["predictions"][0]


def agreement(report: dict, recipe: str, url: str, rows: int | None = None) -> tuple[int, list[dict]]:
    """(rows compared, the rows that differ) for `recipe`'s predictions in a `bench.json` report."""
    result = next((r for r in report["results"] if r["name"] == recipe), None)
    if result is None:
        raise ValueError(f"no recipe {recipe!r} in the report; it has {[r['name'] for r in report['results']]}")
    ids = list(report["inputs"])[:rows] if rows else list(report["inputs"])
    differ = []
    for row_id in ids:
        expected = result["predictions"][row_id]
        answer = served_answer(url, report["inputs"][row_id])
        served = answer if isinstance(expected, dict) else next(iter(answer.values()))
        if served != expected:
            differ.append({"row_id": row_id, "benchmark": expected, "served": served})
    return len(ids), differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="bench.json written by benchmarks.quality")
    parser.add_argument("recipe", help="the recipe whose predictions the served model should reproduce")
    parser.add_argument("url", help="the model server, e.g. http://127.0.0.1:5001")
    parser.add_argument("--rows", type=int, default=None, help="only the first N rows (default: all)")
    args = parser.parse_args(argv)
    n, differ = agreement(json.loads(args.report.read_text()), args.recipe, args.url, args.rows)
    print(json.dumps({"rows": n, "same": n - len(differ), "differ": differ}, indent=2))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
