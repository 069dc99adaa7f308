"""The serving launcher's side: what runs around the model, never inside it.

- `agent_server`: MLflow's agent server (Responses API, Server-Sent Events) in front of the model: `serve stream=true`;
- `scoring_app`: MLflow's scoring app behind a guard that answers 4xx where MLflow's parser answers 500: `serve`;
- `event_loop`: the servers' event loop (TCP_NODELAY with several workers; the agent server's request threads).

What runs inside a served model (row concurrency, deadlines, limits, streaming, errors) is the model's own:
`pipelines.model`.
"""
