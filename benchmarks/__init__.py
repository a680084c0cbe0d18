"""Timing harness and benchmarks; results are appended to benchmarks/RESULTS.md."""
