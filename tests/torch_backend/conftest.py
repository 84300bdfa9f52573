"""Fixtures of the torch.compile backend tests: every test starts from a fresh dynamo cache
and a fixed seed. The helpers themselves live in backend_helpers.py."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()
