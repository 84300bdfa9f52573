"""graphopt's benchmarks: the model zoo (:mod:`benchmarks.models`) and the scripts that measure
the optimizer on it. Not part of the installed package; run from a checkout."""
