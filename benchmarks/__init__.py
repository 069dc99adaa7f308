"""Benchmarks of the pipeline itself, kept out of the shipped `pipelines` package (and so out of every logged
model's `code/`): `quality` (optimisation quality against plain-DSPy anchors), `agreement` (a served model answers
as the benchmark measured) and `speed` (time costs against anchors).

    python -m benchmarks.quality
    python -m benchmarks.speed only=[serving]

Their root configs live in `benchmarks/conf/` and compose the project's `conf/` groups (`pipelines.cli.hydra_main`
puts `conf/` on Hydra's search path). `fake_provider` is the fixed-latency OpenAI-compatible server the speed
benchmark and the tests run against.
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"
