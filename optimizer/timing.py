"""The timing protocol of graphopt (ANCHORS.md, "How to measure speed honestly"): used by
``graphopt bench``, the measured cost model, end-to-end re-ranking and the guard.

Variants of one model are timed in one process, interleaved round by round: every round runs
each variant once (one *sample*, repeated calls lasting at least ``sample_seconds``), in an
order that rotates and reverses from round to round (A B C, C B A, B C A, ...), so drift in
the machine's speed (thermal, frequency, neighbours) hits every variant alike. A variant's
speedup is the median over rounds of ``t(reference) / t(variant)`` within the same round: a
ratio of two samples taken a few milliseconds apart, which cancels most of that drift. The
spread of those ratios (interquartile range) is reported beside it, so a 2% "gain" inside a
5% spread reads as noise.

This module only times callables; building the onnxruntime sessions (fixed intra-op threads,
spinning off so an idle session does not steal the cores of the running one) is the runner's
job.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Each sample lasts at least this long (shorter ones are dominated by timer and call jitter).
DEFAULT_SAMPLE_SECONDS = 0.03
DEFAULT_ROUNDS = 20


@dataclass(frozen=True)
class VariantTiming:
    """Timing of one variant: per-call latency and its speedup over the reference.

    ``speedup`` is the median of the per-round ratios ``t(reference) / t(variant)``;
    ``speedup_q1``/``speedup_q3`` are their quartiles. ``calls`` is the number of calls per
    sample, ``latency_ms`` the median per-call latency.
    """

    name: str
    latency_ms: float
    speedup: float
    speedup_q1: float
    speedup_q3: float
    calls: int
    rounds: int


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def calls_per_sample(fn: Callable[[], object], sample_seconds: float, warmup: int = 2) -> int:
    """How many consecutive calls of ``fn`` make a sample of at least ``sample_seconds``.

    Runs ``warmup`` calls first (first calls allocate, prepack weights and fill caches), then
    times one call and scales.
    """
    for _ in range(max(warmup, 0)):
        fn()
    start = time.perf_counter()
    fn()
    single = max(time.perf_counter() - start, 1e-7)
    return max(1, math.ceil(sample_seconds / single))


def round_order(names: Sequence[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: rotated by the round number, reversed every other
    round, so each variant runs in every position and after every other variant."""
    n = len(names)
    shift = (round_index // 2) % n if n else 0
    order = list(names[shift:]) + list(names[:shift])
    return order[::-1] if round_index % 2 else order


def interleaved(
    variants: Sequence[tuple[str, Callable[[], object]]],
    *,
    reference: str,
    rounds: int = DEFAULT_ROUNDS,
    sample_seconds: float = DEFAULT_SAMPLE_SECONDS,
    warmup: int = 2,
    on_round: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, VariantTiming]:
    """Time ``variants`` (name, zero-argument callable) interleaved; see the module docstring.

    Returns one :class:`VariantTiming` per variant (the reference's speedup is 1 by
    definition). ``on_round`` is called after each round (progress bars).
    """
    names = [name for name, _ in variants]
    if reference not in names:
        raise ValueError(f"reference {reference!r} is not among the variants {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be distinct: {names}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    fns = dict(variants)
    calls = {name: calls_per_sample(fns[name], sample_seconds, warmup) for name in names}
    per_call: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in round_order(names, r):
            fn, n = fns[name], calls[name]
            start = clock()
            for _ in range(n):
                fn()
            per_call[name].append((clock() - start) / n)
        if on_round is not None:
            on_round(r)
    ref = per_call[reference]
    result = {}
    for name in names:
        ratios = [a / b for a, b in zip(ref, per_call[name]) if b > 0]
        result[name] = VariantTiming(
            name=name,
            latency_ms=statistics.median(per_call[name]) * 1e3,
            speedup=statistics.median(ratios) if ratios else math.nan,
            speedup_q1=_quantile(ratios, 0.25) if ratios else math.nan,
            speedup_q3=_quantile(ratios, 0.75) if ratios else math.nan,
            calls=calls[name],
            rounds=rounds,
        )
    return result


def geometric_mean(values: Sequence[float]) -> float | None:
    """Geometric mean of the positive finite ``values`` (None when there are none)."""
    good = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not good:
        return None
    return math.exp(sum(math.log(v) for v in good) / len(good))
