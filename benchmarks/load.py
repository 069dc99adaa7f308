"""Closed-loop load on a served model, and the memory of the process serving it.

`clients` threads each send one request, wait for its answer, and send the next, for `duration_s`;
every request is timed and every failure counted (a status other than 200, or no answer in `timeout_s`).

    >>> result = closed_loop("http://127.0.0.1:5001", lambda i: {"dataframe_records": [{"text": f"hi {i}"}]},
    ...                      clients=16, duration_s=8)                        # doctest: +SKIP
    >>> result.errors, round(result.p50_s, 2), round(result.requests_per_s)   # doctest: +SKIP
    (0, 0.21, 74)
    >>> tree_rss_mb(listening_pid(5001))                                      # doctest: +SKIP
    412.5
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    clients: int
    duration_s: float  # from the first request sent to the last answer received
    latencies_s: list[float] = field(default_factory=list, repr=False)  # answered requests only
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)  # the first few, for the report

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

    @property
    def p50_s(self) -> float:
        return self.percentile(50)

    @property
    def p99_s(self) -> float:
        return self.percentile(99)

    def summary(self) -> dict[str, float]:
        return {
            "clients": self.clients,
            "requests": self.ok + self.errors,
            "errors": self.errors,
            "requests_per_s": self.requests_per_s,
            "p50_s": self.p50_s,
            "p99_s": self.p99_s,
        }


def closed_loop(
    url: str, make_body: Callable[[int], dict], *, clients: int, duration_s: float, timeout_s: float = 60.0
) -> LoadResult:
    """`clients` concurrent clients, each sending its next request as soon as the last is answered, until
    `duration_s` has passed (a request in flight then is still waited for). `make_body(i)` builds request i."""
    numbers = itertools.count()
    result, lock = LoadResult(clients=clients, duration_s=0.0), threading.Lock()
    start = time.perf_counter()
    deadline = start + duration_s

    target = urlsplit(url)
    path = f"{target.path.rstrip('/')}/invocations"
    headers = {"Content-Type": "application/json"}

    def client():
        # http.client on one kept-alive connection, as a real client keeps it. Not `requests`: the clients' CPU is
        # taken from the server under test on a small machine. A POST to the fake provider, client and fake in one
        # process, cost 1.13 ms of CPU with requests and 0.38 ms with http.client (medians of 5 x 300 calls).
        # http.client sends headers and body in one write (no Nagle delay).
        conn = None
        while time.perf_counter() < deadline:
            payload = json.dumps(make_body(next(numbers))).encode()
            sent = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=timeout_s)
                conn.request("POST", path, payload, headers)
                response = conn.getresponse()
                answer = response.read()[:200].decode(errors="replace")
                failure = None if response.status == 200 else f"HTTP {response.status}: {answer}"
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out: reconnect next time
                failure = f"{type(exc).__name__}: {exc}"[:200]
                if conn is not None:
                    conn.close()
                conn = None
            elapsed = time.perf_counter() - sent
            with lock:
                if failure is None:
                    result.latencies_s.append(elapsed)
                else:
                    result.errors += 1
                    if len(result.error_examples) < 5:
                        result.error_examples.append(failure)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.duration_s = time.perf_counter() - start
    return result


def listening_pid(port: int) -> int:
    """The process listening on `port` on this machine (the server itself, whatever launched it)."""
    import psutil

    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise LookupError(f"no process is listening on port {port}")


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of a process and all its descendants: the server with any workers it forked."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:  # a worker that exited between listing and reading
            pass
    return total / 2**20


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants."""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))
