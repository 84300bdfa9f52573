"""Suite-wide test settings.

The guard (``optimizer.api``) times the rewritten model against the clean-up passes' result
on the wall clock, and keeps whichever is faster. Tests must not depend on wall-clock time, so
here its measurement reports a fixed gain and every test sees the rewrites kept, as on a
machine where they pay off. The guard's decisions are tested with fixed figures in
tests/search/test_guard.py, and its real timing by the tests marked ``real_guard``.

It also prints the ONNX conformance summary (tests/conformance): per kind, cases run, passing
unmodified on onnxruntime, and passing after graphopt; plus why cases were excluded. Each
case's outcome travels on its test report (``user_properties``), so the summary also works
when pytest-xdist runs the cases in workers; the hooks live here, not in tests/conformance,
because the xdist controller loads only this top-level conftest.
"""

from __future__ import annotations

import collections
import sys
from types import SimpleNamespace

import pytest

#: The speedup the stubbed guard measurement reports (rewrites kept).
STUB_SPEEDUP = 2.0


@pytest.fixture(autouse=True)
def _deterministic_guard(request, monkeypatch):
    if request.node.get_closest_marker("real_guard") is not None:
        return
    import optimizer.api

    monkeypatch.setattr(optimizer.api, "measure_speedup", lambda *a, **k: STUB_SPEEDUP)


# ------------------------------------------------------------------ conformance summary
#: Key of the outcome in a report's ``user_properties``.
_PROPERTY = "conformance_outcome"


def _module():
    for name, module in list(sys.modules.items()):
        if name.rpartition(".")[2] == "test_onnx_backend" and hasattr(module, "OUTCOMES"):
            return module
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    module = _module()
    case_id = getattr(item, "callspec", None) and item.callspec.params.get("case_id")
    if report.when != "teardown" or module is None or case_id not in module.OUTCOMES:
        return
    o = module.OUTCOMES[case_id]
    report.user_properties.append((_PROPERTY, (case_id, dict(vars(o)))))


def _outcomes(terminalreporter):
    """case id -> outcome, from the reports (works with and without xdist)."""
    found = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", ()):
                if key == _PROPERTY:
                    case_id, fields = value
                    found[case_id] = SimpleNamespace(**fields)
    return found


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    outcomes = _outcomes(terminalreporter)
    module = _module()
    kinds = module.KINDS if module is not None else sorted({o.kind for o in outcomes.values()})
    if not outcomes:
        return
    write = terminalreporter.write_line
    terminalreporter.section("ONNX backend conformance")
    write(f"{'kind':<20}{'cases':>7}{'ORT unmodified':>16}{'after graphopt':>16}")
    for kind in kinds:
        rows = [o for o in outcomes.values() if o.kind == kind]
        if not rows:
            continue
        base = sum(o.baseline_ok is True for o in rows)
        after = sum(o.optimized_ok is True for o in rows)
        write(f"{kind:<20}{len(rows):>7}{base:>16}{after:>16}")
    reasons = collections.Counter(
        o.baseline_reason for o in outcomes.values() if o.baseline_ok is False
    )
    if reasons and config.getoption("verbose") >= 1:
        write("excluded (not passing unmodified on onnxruntime):")
        for case_id, o in sorted(outcomes.items()):
            if o.baseline_ok is False:
                write(f"  {case_id}: {o.baseline_reason}")
    elif reasons:
        write(f"{sum(reasons.values())} cases excluded; run with -v to list them with reasons")
    failed = sorted((k, o) for k, o in outcomes.items() if o.optimized_ok is False)
    if failed:
        write("failing after graphopt:")
        for case_id, o in failed:
            write(f"  {case_id}: {o.optimized_reason}")
