"""The interleaved timing protocol (optimizer.timing), on fake workloads and a fake clock."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from optimizer import timing


class FakeClock:
    """A clock that advances only when a fake workload runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def workload(self, seconds_per_call):
        def run():
            self.now += seconds_per_call() if callable(seconds_per_call) else seconds_per_call

        return run


def test_round_order_puts_every_variant_in_every_position():
    names = ["a", "b", "c"]
    positions = Counter()
    for r in range(12):
        order = timing.round_order(names, r)
        assert sorted(order) == names
        positions.update((name, order.index(name)) for name in names)
    # 12 rounds over 3 positions: each variant sits in each position equally often.
    assert set(positions.values()) == {4}


def test_round_order_alternates_direction():
    assert timing.round_order(["a", "b"], 0) == ["a", "b"]
    assert timing.round_order(["a", "b"], 1) == ["b", "a"]


def test_speedup_is_the_ratio_of_per_call_times():
    clock = FakeClock()
    variants = [("ref", clock.workload(0.004)), ("fast", clock.workload(0.002))]
    # sample_seconds=0: one call per sample, so the arithmetic is exact.
    result = timing.interleaved(
        variants, reference="ref", rounds=5, sample_seconds=0.0, warmup=0, clock=clock
    )
    assert result["ref"].speedup == pytest.approx(1.0)
    assert result["fast"].speedup == pytest.approx(2.0)
    assert result["fast"].latency_ms == pytest.approx(2.0)
    assert result["ref"].latency_ms == pytest.approx(4.0)
    assert result["fast"].rounds == 5


def test_median_of_ratios_cancels_a_drift_shared_by_both_variants():
    clock = FakeClock()
    state = {"calls": 0}

    def drifting(base):
        def cost():
            # The machine slows down 1% per call for everyone (thermal drift, a neighbour).
            state["calls"] += 1
            return base * (1.0 + 0.01 * state["calls"])

        return cost

    variants = [("ref", clock.workload(drifting(0.003))), ("same", clock.workload(drifting(0.003)))]
    result = timing.interleaved(
        variants, reference="ref", rounds=21, sample_seconds=0.0, warmup=0, clock=clock
    )
    # Per-call latencies drift by ~20% over the run, the ratio stays within a step of 1.
    assert result["same"].speedup == pytest.approx(1.0, abs=0.015)


def test_quartiles_bracket_the_median():
    clock = FakeClock()
    costs = iter([0.001, 0.002, 0.0015, 0.001, 0.003] * 40)
    variants = [("ref", clock.workload(0.002)), ("noisy", clock.workload(lambda: next(costs)))]
    result = timing.interleaved(
        variants, reference="ref", rounds=9, sample_seconds=0.0, warmup=0, clock=clock
    )
    noisy = result["noisy"]
    assert noisy.speedup_q1 <= noisy.speedup <= noisy.speedup_q3
    assert noisy.speedup_q1 < noisy.speedup_q3


def test_calls_per_sample_reaches_the_sample_length():
    calls = timing.calls_per_sample(lambda: sum(range(1000)), sample_seconds=0.01, warmup=1)
    assert calls >= 1
    assert timing.calls_per_sample(lambda: None, sample_seconds=0.0, warmup=0) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reference": "missing"}, "reference"),
        ({"reference": "a", "rounds": 0}, "rounds"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        timing.interleaved([("a", lambda: None)], **kwargs)


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        timing.interleaved([("a", lambda: None), ("a", lambda: None)], reference="a")


def test_geometric_mean_ignores_missing_and_bad_values():
    assert timing.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    assert timing.geometric_mean([2.0, None, math.nan, -1.0, 8.0]) == pytest.approx(4.0)
    assert timing.geometric_mean([]) is None
