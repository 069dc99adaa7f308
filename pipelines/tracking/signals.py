"""SIGTERM and SIGINT end a run FAILED with a reason, and a signalled process exits without waiting on hung threads."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SIGNALS_RECEIVED: list[int] = []  # signals that ended a run in this process (read by exit_if_signalled)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (a scheduler, `kill`, a CI timeout) into SystemExit and SIGINT into KeyboardInterrupt, so
    the run ends FAILED with a reason instead of staying RUNNING forever; yields the signals received. Only
    the main thread can install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return

    received: list[int] = []

    def terminate(signum, frame):
        received.append(signum)
        _SIGNALS_RECEIVED.append(signum)
        raise SystemExit(f"terminated by signal {signal.Signals(signum).name}")

    def interrupt(signum, frame):
        received.append(signum)
        _SIGNALS_RECEIVED.append(signum)
        raise KeyboardInterrupt

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, terminate)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_if_signalled(exc: BaseException) -> None:
    """After a signal ended the run (already marked FAILED, its traces flushed), exit now if worker threads are
    still busy, e.g. inside LM calls of a parallel evaluation that the signal abandoned.

    Python joins such threads before it exits (concurrent.futures' exit hook), so one hung call would hold a
    terminated process until the LM's timeout; a scheduler would then escalate to SIGKILL. Exit status 128 + the
    signal's number, as the shell reports a process killed by it."""
    if not _SIGNALS_RECEIVED:
        return
    busy = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    if not busy:
        return  # nothing to wait for: Python's own exit prints the reason and runs its exit hooks
    print(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, file=sys.stderr)
    print(f"exiting without waiting for {len(busy)} busy thread(s): {', '.join(t.name for t in busy)}", file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + _SIGNALS_RECEIVED[0])
