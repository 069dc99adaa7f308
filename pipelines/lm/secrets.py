"""Keep API key values out of what the pipeline writes: exception text, traces, tags, logs, result tables.

Keys never enter config (see `pipelines.lm.factories`), but a provider or proxy may echo the request's
Authorization header in its error body, and LiteLLM and DSPy carry that text into the exception that
MLflow then records on a trace span, DSPy's executor logs, and our `error` tag and column show. So every
key an LM is built with is registered here, and:

- `scrub(text)` replaces each registered value in a string;
- `scrub_exception(exc)` rewrites an exception and its whole cause/context chain IN PLACE (args, string
  attributes such as LiteLLM's and DSPy's `message`, notes), so every later reader sees the clean text;
- `ScrubSecrets`, a DSPy callback placed FIRST in `dspy.settings.callbacks`, does that as an LM or module
  call ends, before MLflow's callback (which comes after it) records the exception on the span.

    >>> register_secret("sk-abc123456")
    >>> scrub("401: received Authorization: Bearer sk-abc123456")
    '401: received Authorization: Bearer ***REDACTED***'
"""

from __future__ import annotations

import threading

import dspy
from dspy.utils.callback import BaseCallback

from pipelines.config import REDACTED

MIN_SECRET_CHARS = 4  # a shorter value would mangle ordinary text and is no real key
_SECRETS: set[str] = set()
_LOCK = threading.Lock()


def register_secret(value: str | None) -> None:
    """Scrub `value` from everything this process writes from now on; installs `ScrubSecrets` once."""
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    with _LOCK:
        _SECRETS.add(value)
    install_scrubber()


def scrub(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):  # longest first: a key containing another
        text = text.replace(secret, REDACTED)
    return text


def _scrubbed(value):
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrubbed(v) for v in value)
    return value


def scrub_exception(exc: BaseException | None) -> BaseException | None:
    """`exc` with every registered secret removed from it and from its causes, in place; returns `exc`."""
    if not _SECRETS:
        return exc
    stack, seen = [exc], set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        try:
            current.args = _scrubbed(current.args)
            for name, value in list(vars(current).items()):
                clean = _scrubbed(value)
                if clean != value:
                    setattr(current, name, clean)
        except (AttributeError, TypeError):  # a read-only attribute: the rest is still scrubbed
            pass
        stack += [current.__cause__, current.__context__]
    return exc


class ScrubSecrets(BaseCallback):
    """Scrubs the exception of every LM/module/adapter/tool call as it ends, before later callbacks see it."""

    def _end(self, exception):
        if exception is not None:
            scrub_exception(exception)

    def on_lm_end(self, call_id, outputs, exception=None):
        self._end(exception)

    def on_module_end(self, call_id, outputs, exception=None):
        self._end(exception)

    def on_adapter_format_end(self, call_id, outputs, exception=None):
        self._end(exception)

    def on_adapter_parse_end(self, call_id, outputs, exception=None):
        self._end(exception)

    def on_tool_end(self, call_id, outputs, exception=None):
        self._end(exception)

    def on_evaluate_end(self, call_id, outputs, exception=None):
        self._end(exception)


_SCRUBBER = ScrubSecrets()


def install_scrubber() -> None:
    """Put `ScrubSecrets` first among DSPy's global callbacks (callbacks end in list order, so MLflow's,
    added by `mlflow.dspy.autolog` before or after, sees the scrubbed exception). Only the thread that
    configured DSPy may reconfigure it; elsewhere the scrubber is left as it is."""
    callbacks = list(dspy.settings.get("callbacks") or [])
    if callbacks and callbacks[0] is _SCRUBBER:
        return
    try:
        dspy.settings.configure(callbacks=[_SCRUBBER, *(c for c in callbacks if c is not _SCRUBBER)])
    except RuntimeError:
        pass  # not DSPy's configuring thread; `scrub`/`scrub_exception` still guard our own writes
