"""The logged model's format and runtime: what a served, batch-scored or evaluated model runs.

- `log`: log a DSPy program as a pyfunc model (`log_program_model`), its code and requirements;
- `spec`: what the model stores to rebuild itself (`build_spec`, the artifact names);
- `finetuned`: a fine-tuned program's weights travel with it;
- `pyfunc`: the pyfunc class (`DSPyProgramModel`), loaded through `pyfunc_entry` ("model from code");
- `inputs`: a request's rows checked against the task's contract (HTTP 400 on a bad one);
- `row_runner`: a request's rows, concurrently where the LM allows, within the request's deadline;
- `limits`: the model's serving bounds (rows, deadline, threads, DSPy's caches), saved as its `model_config`;
- `server_threads`: MLflow's scoring server's request threads, widened to the model's `request_threads`;
- `lm_engine`: which DSPy engine a served provider LM calls through;
- `streaming`: one row's answer as it is written;
- `errors`: an LM failure as the scoring server's 5xx.

Nothing here imports `pipelines.registry` or `pipelines.serving`: both sit above it.
"""
