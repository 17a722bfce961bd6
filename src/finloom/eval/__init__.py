"""Evaluation: benchmarks, scenario scoring, report."""
