"""Serving the registered program: rows run concurrently where the LM allows, answers stream token by token.

- `rows`: a request's rows, concurrently: `concurrency` for a provider LM, `lm.n_contexts` for the embedded model;
- `streaming`: `dspy.streamify` with one listener per output field (the last stage's, for multi-stage programs);
- `agent_server`: MLflow's agent server (Responses API, Server-Sent Events) in front of the model: `serve stream=true`.
"""

from pipelines.serving.rows import CONCURRENCY_ENV, row_concurrency, run_rows
from pipelines.serving.streaming import output_listeners, stream_program, stream_program_sync

__all__ = [
    "CONCURRENCY_ENV",
    "output_listeners",
    "row_concurrency",
    "run_rows",
    "stream_program",
    "stream_program_sync",
]
