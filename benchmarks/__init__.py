"""Benchmarks: one script per op family; results in benchmarks/results/<family>.csv."""
