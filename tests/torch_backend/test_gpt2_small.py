"""GPT-2 small itself (124M parameters, random weights, sequence 128), as issue 6 asks: about
25 s on two busy cores, most of it exporting and verifying half a gigabyte of weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")
from backend_helpers import Recorder, assert_same  # noqa: E402

from benchmarks import models  # noqa: E402

pytestmark = pytest.mark.torch


def test_gpt2_small_matches_eager():
    module, inputs = models.build("gpt2_small")
    backend = Recorder(check=False)  # compared below; the check would run eager twice
    compiled = torch.compile(module, backend=backend)
    with torch.inference_mode():
        got = compiled(*inputs)
        expected = module(*inputs)
    assert_same(got, expected)
    (graph,) = backend.graphs
    assert graph.fallback_reason is None
    assert graph.stats.nodes_after <= graph.stats.nodes_before
