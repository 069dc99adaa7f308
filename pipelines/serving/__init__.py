"""The serving launcher's side: what runs around the model, never inside it.

- `agent_server`: MLflow's agent server (Responses API, Server-Sent Events) in front of the model: `serve stream=true`;
- `event_loop`: the agent server's event loop.

What runs inside a served model (row concurrency, deadlines, limits, streaming, errors) is the model's own:
`pipelines.model`.
"""
