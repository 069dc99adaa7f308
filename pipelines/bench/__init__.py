"""Benchmarks of the pipeline itself: `quality` (optimisation quality against plain-DSPy anchors),
`agreement` (a served model answers as the benchmark measured) and `speed` (time costs against anchors)."""
