"""Benchmarks of the pipeline itself: `quality` (optimisation quality against plain-DSPy anchors) and
`agreement` (a served model answers as the benchmark measured)."""
