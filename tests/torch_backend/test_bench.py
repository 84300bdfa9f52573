"""The hook ``graphopt bench --torch`` calls for its "torch-graphopt" row."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")
from backend_helpers import assert_same  # noqa: E402

from benchmarks import models  # noqa: E402
from optimizer.torch_backend.bench import graphopt_variant  # noqa: E402

pytestmark = pytest.mark.torch


def test_graphopt_variant_runs_one_inference():
    module, inputs = models.build("bert_tiny")
    with torch.inference_mode():
        expected = module(*inputs)
    run, compile_seconds = graphopt_variant(
        module, inputs, device="cpu", threads=1, options={"time_limit": 0.5, "fallback": False}
    )
    assert compile_seconds > 0
    assert_same(run(), expected)
    assert_same(run(), expected)
