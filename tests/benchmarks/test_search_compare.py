"""The search side by side's verdict: does an algorithm reach TASO's reduction within a
tenth of TASO's time (from its whole run, or from a run limited to that tenth)?"""

from __future__ import annotations

from benchmarks.search_compare import _verdict


def _result(reduction: float, seconds: float, match: bool = True) -> dict:
    return {"status": "ok", "reduction": reduction, "seconds": seconds, "outputs_match": match}


def _entry(**algorithms: dict) -> dict:
    return {"algorithms": {k.replace("_at_", "@"): v for k, v in algorithms.items()}}


def test_a_whole_run_within_a_tenth_that_reaches_the_reduction_is_a_yes():
    entry = _entry(taso=_result(0.10, 60.0), ocggs=_result(0.12, 5.0))
    assert _verdict(entry, "ocggs").startswith("yes (0.08")


def test_a_longer_run_is_judged_by_the_run_limited_to_a_tenth():
    entry = _entry(
        taso=_result(0.10, 57.5), ocggs=_result(0.27, 6.1), ocggs_at_tenth=_result(0.26, 5.7)
    )
    assert _verdict(entry, "ocggs").startswith("yes (limited to a tenth, 5.7 s: 26.00%")
    entry["algorithms"]["ocggs@tenth"] = _result(0.09, 5.7)  # short of TASO's reduction
    assert _verdict(entry, "ocggs").startswith("no (limited")
    entry["algorithms"]["ocggs@tenth"] = _result(0.26, 5.8)  # over the tenth
    assert _verdict(entry, "ocggs").startswith("no (limited")


def test_without_a_limited_run_a_slow_one_is_a_no():
    entry = _entry(taso=_result(0.10, 10.0), eqsat=_result(0.20, 3.0))
    assert _verdict(entry, "eqsat") == "no (0.30 of the time)"
    entry = _entry(taso=_result(0.30, 60.0), eqsat=_result(0.20, 3.0))  # fast, short of it
    assert _verdict(entry, "eqsat").startswith("no")
