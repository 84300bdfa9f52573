"""The guard: the rule search's result is kept only when measured faster than the clean-up's.

The decision is tested with the measurement replaced by fixed figures (tests never depend on
wall-clock time); the tests marked ``real_guard`` run the real timing and check only that it
ran and decided.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper
from test_search import _mlp  # the shared test model

import optimizer
from optimizer import api, runtime

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def measured(monkeypatch):
    """Replace the guard's measurement by a fixed speedup; records the calls."""
    calls = []

    def fake(speedup):
        def measure(cleaned, rewritten, options):
            calls.append((cleaned, rewritten))
            return speedup

        monkeypatch.setattr(api, "measure_speedup", measure)
        return calls

    return fake


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(path).graph.node]


def test_slower_rewrites_are_dropped_for_the_cleanup_result(tmp_path, measured):
    calls = measured(0.95)
    src = tmp_path / "m.onnx"
    onnx.save(_mlp(2), src)
    report = optimizer.optimize_file(src, tmp_path / "o.onnx")
    assert len(calls) == 1
    assert report.guard.kept == api.CLEANED and report.guard.speedup == 0.95
    # Nothing in this model is for the clean-up passes: the written model has the input's
    # ops; the rewrites (transposes cancelled, multiplications by one dropped) are gone.
    assert _ops(tmp_path / "o.onnx") == _ops(src)
    assert runtime.compare_models(src, tmp_path / "o.onnx").ok
    assert report.to_json()["guard"]["kept"] == "cleaned"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "o.onnx"]  # no leftovers


def test_faster_rewrites_are_kept(tmp_path, measured):
    measured(1.2)
    src = tmp_path / "m.onnx"
    onnx.save(_mlp(2), src)
    report = optimizer.optimize_file(src, tmp_path / "o.onnx")
    assert report.guard.kept == api.REWRITTEN
    assert "Transpose" not in _ops(tmp_path / "o.onnx")
    summary = {p.key: p.value for p in onnx.load(tmp_path / "o.onnx").metadata_props}
    assert json.loads(summary[api.SUMMARY_KEY])["rewrites"]


def test_gains_inside_the_noise_do_not_count(tmp_path, measured):
    measured((1 + api.GUARD_MIN_SPEEDUP) / 2)
    model = optimizer.optimize(_mlp(2))
    assert "Transpose" in [n.op_type for n in model.graph.node]


def test_no_guard_keeps_the_rewrites_untimed(tmp_path, measured):
    calls = measured(0.5)
    model = optimizer.optimize(_mlp(2), guard=False)
    assert calls == [] and "Transpose" not in [n.op_type for n in model.graph.node]


def test_nothing_to_guard_when_the_search_rewrote_nothing(measured):
    calls = measured(0.5)
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    proto = helper.make_model(
        helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )  # fmt: skip
    optimizer.optimize(proto)
    assert calls == []


@pytest.mark.real_guard
def test_real_timing_runs_and_decides(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_mlp(2), src)
    report = optimizer.optimize_file(src, tmp_path / "o.onnx")
    assert report.guard.kept in (api.REWRITTEN, api.CLEANED)
    assert report.guard.speedup is not None and np.isfinite(report.guard.speedup)
    assert runtime.compare_models(src, tmp_path / "o.onnx").ok


def test_a_rewritten_model_onnxruntime_cannot_time_is_not_kept(tmp_path, monkeypatch):
    # The check runs with onnxruntime's optimizations off; the guard at ORT_ENABLE_ALL is
    # where a model that users could not load shows up: the clean-up result is written.
    from optimizer.errors import CheckUnavailableError

    def refuse(cleaned, rewritten, options):
        raise CheckUnavailableError("onnxruntime cannot load candidate 0: Node input is bad")

    monkeypatch.setattr(api, "measure_speedup", refuse)
    src = tmp_path / "m.onnx"
    onnx.save(_mlp(2), src)
    report = optimizer.optimize_file(src, tmp_path / "o.onnx")
    assert report.guard.kept == api.CLEANED and "cannot load" in report.guard.reason
    assert _ops(tmp_path / "o.onnx") == _ops(src)
