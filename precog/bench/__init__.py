"""Benchmarks on the local stack: runner, baseline apps, process I/O and report.

``precog bench`` (``./scripts/bench``) drives :mod:`precog.bench.runner` (docs/benchmarks.md).
"""
