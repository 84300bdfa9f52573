"""The conformance summary: per kind, cases run, passing unmodified on onnxruntime, and
passing after graphopt; plus why cases were excluded."""

from __future__ import annotations

import collections
import sys


def _outcomes():
    for name, module in list(sys.modules.items()):
        if name.rpartition(".")[2] == "test_onnx_backend" and hasattr(module, "OUTCOMES"):
            return module.OUTCOMES, module.KINDS
    return None, ()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    outcomes, kinds = _outcomes()
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
