"""Fixtures of the torch.compile backend tests: every test starts from a fresh dynamo cache,
an empty persistent compile cache of its own (so no test hits another's entries, and none
writes into the user's cache folder) and a fixed seed. The helpers themselves live in
backend_helpers.py."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")


@pytest.fixture(autouse=True)
def _fresh_dynamo(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHOPT_TORCH_CACHE_DIR", str(tmp_path / "torch-compile-cache"))
    monkeypatch.delenv("GRAPHOPT_TORCH_CACHE", raising=False)
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()
