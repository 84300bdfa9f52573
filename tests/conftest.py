"""Suite-wide test settings.

The guard (``optimizer.api``) times the rewritten model against the clean-up passes' result
on the wall clock, and keeps whichever is faster. Tests must not depend on wall-clock time, so
here its measurement reports a fixed gain and every test sees the rewrites kept, as on a
machine where they pay off. The guard's decisions are tested with fixed figures in
tests/search/test_guard.py, and its real timing by the tests marked ``real_guard``.
"""

from __future__ import annotations

import pytest

#: The speedup the stubbed guard measurement reports (rewrites kept).
STUB_SPEEDUP = 2.0


@pytest.fixture(autouse=True)
def _deterministic_guard(request, monkeypatch):
    if request.node.get_closest_marker("real_guard") is not None:
        return
    import optimizer.api

    monkeypatch.setattr(optimizer.api, "measure_speedup", lambda *a, **k: STUB_SPEEDUP)
