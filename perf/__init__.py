"""Benchmarks behind `make perf`: the reference data set, the cases, measurement and the report."""
