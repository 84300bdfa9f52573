"""Load-aware timing of isolated nodes: a burst of other work must not set a node's timing.

A fake clock stands in for time (tests never depend on wall-clock time): a "busy" phase makes
every call of the node, and of the probe, take three times as long.
"""

from __future__ import annotations

import pytest

from optimizer.cost import isolate
from optimizer.cost.device import DeviceSpec


class FakeMachine:
    """A clock that advances only when a fake kernel runs; busy for the first ``busy`` probe
    samples (then every kernel takes 3x as long)."""

    def __init__(self, busy: int) -> None:
        self.now = 0.0
        self.busy = busy
        self.probes = 0

    def clock(self) -> float:
        return self.now

    def kernel(self, seconds: float):
        def run() -> None:
            self.now += seconds * (3.0 if self.probes <= self.busy else 1.0)

        return run

    def probe(self) -> isolate.LoadProbe:
        machine = self
        run = self.kernel(1e-5)

        class Probe(isolate.LoadProbe):
            def quiet(self, clock=None) -> bool:
                machine.probes += 1
                return super().quiet(machine.clock)

        return Probe(run, calls=3)


@pytest.fixture(autouse=True)
def one_call_per_sample(monkeypatch):
    """calls_per_sample times a call on the real clock: here a sample is one fake call."""
    monkeypatch.setattr(isolate, "calls_per_sample", lambda call, seconds, warmup: 1)


def _best(machine: FakeMachine, probe, samples: int = 3) -> float:
    return isolate._best_seconds(
        machine.kernel(1e-4), 0.0005, samples, 0, probe=probe, clock=machine.clock
    )


def test_sampling_outlasts_a_burst_longer_than_the_usual_budget():
    machine = FakeMachine(busy=0)
    probe = machine.probe()
    assert probe.quiet() and probe.best == pytest.approx(1e-5)  # the quiet speed is known
    # A burst covering 20 samples: more than the 4 x 3 the usual budget allows.
    machine.busy, machine.probes = 20, 0
    assert _best(machine, probe) == pytest.approx(1e-4)
    machine.busy, machine.probes = 20, 0
    assert _best(machine, None) == pytest.approx(3e-4)  # without the probe: inflated


def test_a_machine_busy_throughout_costs_a_bounded_search():
    machine = FakeMachine(busy=0)
    probe = machine.probe()
    probe.quiet()
    machine.busy, machine.probes = 10**9, 0  # busy from now on, for good
    assert not probe.quiet()
    # No quiet sample ever: the best of all, after at most QUIET_BUDGET_SECONDS of sampling.
    assert _best(machine, probe) == pytest.approx(3e-4)
    assert machine.now < 2 * isolate.QUIET_BUDGET_SECONDS


def test_a_probe_that_never_saw_the_machine_quiet_asks_for_nothing_more():
    machine = FakeMachine(busy=10**9)
    probe = machine.probe()  # its first sample is busy: busy is its "quiet"
    assert _best(machine, probe) == pytest.approx(3e-4)
    assert machine.probes == 4 * 3  # the usual budget: 4 x samples (each 3e-4 s)


def test_without_a_probe_every_sample_counts():
    machine = FakeMachine(busy=10**9)
    assert _best(machine, None) == pytest.approx(3e-4)


def test_cpu_devices_get_one_probe_per_setting_and_gpus_none():
    cpu = DeviceSpec("cpu", threads=1)
    probe = isolate.load_probe(cpu)
    assert isinstance(probe, isolate.LoadProbe)
    assert isolate.load_probe(DeviceSpec("cpu", threads=1)) is probe
    assert probe.quiet() in (True, False) and probe.best > 0
