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


def test_fresh_process_compile_times_cold_then_warm():
    from optimizer.torch_backend.bench import fresh_process_compile_times

    times = fresh_process_compile_times(
        "bert_tiny", threads=1, options={"time_limit": 0.2, "fallback": False},
        systems=("graphopt",), say=lambda _: None,
    )  # fmt: skip
    cold, warm = times["graphopt"]["cold"], times["graphopt"]["warm"]
    assert "error" not in cold and "error" not in warm, (cold, warm)
    # the first process compiled into an empty cache, the second found every graph there
    assert cold["phases"]["cache"] and set(cold["phases"]["cache"]) == {"miss"}
    assert set(warm["phases"]["cache"]) == {"hit"}
    assert warm["phases"]["export"] == warm["phases"]["optimize"] == 0.0
    assert cold["compile_seconds"] > 0 and warm["compile_seconds"] > 0
