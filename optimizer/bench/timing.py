"""The timing protocol lives in :mod:`optimizer.timing` (the cost models use it too)."""

from optimizer.timing import (  # noqa: F401 - re-exported for the bench runner's users
    DEFAULT_ROUNDS,
    DEFAULT_SAMPLE_SECONDS,
    VariantTiming,
    calls_per_sample,
    geometric_mean,
    interleaved,
    round_order,
)
