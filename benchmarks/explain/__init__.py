"""Benchmarks of the explanation module (issue 8): see run.py."""
