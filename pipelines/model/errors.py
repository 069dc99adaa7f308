"""What a serving client is told when the model's LM fails: a 5xx that says whose fault it is, in one line.

MLflow's scoring server answers any exception from `predict` that is not an `MlflowException` with a 400
(blaming the caller) and the whole Python stack trace. An LM failure is not the caller's fault, and a
stack trace is no message: DSPy's typed LM errors map to the HTTP status a client can act on, with a short
text scrubbed of every configured key (a provider or proxy may echo the Authorization header).

    LMTimeoutError (or a transport error
    from a socket timeout: DSPy's engine)  -> 504 (DEADLINE_EXCEEDED): retry later or raise lm.timeout
    DeadlinePassed (the request's own)     -> 504: rows not started by the server's timeout are never run
    LMRateLimitError, LMServerError,
    LMTransportError                       -> 503 (TEMPORARILY_UNAVAILABLE): retry with backoff
    an input past the LM's context window  -> 400 (INVALID_PARAMETER_VALUE): the caller's input is too long
    anything else (auth, config, a bug)    -> 500 (INTERNAL_ERROR): the deployment needs fixing
"""

from __future__ import annotations

from dspy.utils.exceptions import (
    AdapterParseError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    DEADLINE_EXCEEDED,
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    TEMPORARILY_UNAVAILABLE,
)

from pipelines.lm.secrets import scrub
from pipelines.model.row_runner import DeadlinePassed

MAX_MESSAGE_CHARS = 300


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return scrub(text[0] if text else type(exc).__name__)[:MAX_MESSAGE_CHARS]


def _caused_by_timeout(exc: BaseException) -> bool:
    """Whether a socket timeout is behind `exc`: DSPy's own engine (`lm15`) reports its read timeout as a
    transport error, raised from the socket's TimeoutError."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, TimeoutError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def serving_error(exc: Exception) -> MlflowException:
    """`exc` (raised while answering a request) as the MlflowException the scoring server turns into a status."""
    if isinstance(exc, MlflowException):
        return exc  # ours (a bad input, a guard's refusal): already says what the caller did wrong
    detail = f"{type(exc).__name__}: {_first_line(exc)}"
    if isinstance(exc, DeadlinePassed):
        return MlflowException(f"The request ran past the server's timeout ({detail})", error_code=DEADLINE_EXCEEDED)
    if isinstance(exc, LMTimeoutError) or (isinstance(exc, LMTransportError) and _caused_by_timeout(exc)):
        return MlflowException(f"The model's LM timed out ({detail})", error_code=DEADLINE_EXCEEDED)
    if isinstance(exc, LMRateLimitError | LMServerError | LMTransportError):
        return MlflowException(
            f"The model's LM is unavailable; retry later ({detail})", error_code=TEMPORARILY_UNAVAILABLE
        )
    if "context window" in str(exc).lower() or "context length" in str(exc).lower():
        return MlflowException(
            f"The input is too long for the model's LM ({detail})", error_code=INVALID_PARAMETER_VALUE
        )
    if isinstance(exc, AdapterParseError):
        return MlflowException(
            f"The model's LM answered in a form that does not parse into the outputs ({type(exc).__name__})",
            error_code=INTERNAL_ERROR,
        )
    return MlflowException(f"The model failed to answer ({detail})", error_code=INTERNAL_ERROR)
