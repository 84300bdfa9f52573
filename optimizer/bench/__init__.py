"""Benchmark runner behind `graphopt bench`."""
