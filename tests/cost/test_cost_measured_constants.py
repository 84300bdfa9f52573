"""The measured model sees operands computed from constants as onnxruntime does: constants.

A search prices graphs before constant folding: kernel enlargement leaves a Conv reading
``Pad(W)``, an unfused bias is ``Reshape(b)``. onnxruntime folds those before it runs the
model, so the node must be timed with a constant there, not a run-time input (a Conv with a
run-time weight gets neither NCHWc nor prepacked weights, and a run-time "bias" is not fused).
"""

from __future__ import annotations

import numpy as np
from cost_helpers import const, f32, graph, op

from optimizer.cost import isolate
from optimizer.cost.analytic import AnalyticCost
from optimizer.cost.device import DeviceSpec
from optimizer.cost.measured import MeasuredCost
from optimizer.ir import graph_input as ir_input

QUICK = {"sample_seconds": 0.0002, "samples": 2, "warmup": 1}
FALLBACK = AnalyticCost(launch_overhead=1e-6, bytes_weight=1e-9, flop_weight=1e-10,
                        units="seconds")  # fmt: skip
OPSETS = {"": 17}


def _weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((16, 8, 1, 1)).astype(np.float32)
    return w1, rng.standard_normal(16).astype(np.float32)


def _padded_conv():
    """``Conv(x, Pad(W1x1))`` (a 3x3 kernel computed from a 1x1 one) and the same Conv with
    the padded weight as a constant."""
    x = ir_input("x", f32(1, 8, 12, 12))
    w1, _ = _weights()
    pads = const(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64))
    padded = op("Pad", [const(w1), pads], f32(16, 8, 3, 3)).output
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    computed = op("Conv", [x, padded], f32(1, 16, 12, 12), **attrs)
    folded_w = np.pad(w1, ((0, 0), (0, 0), (1, 1), (1, 1)))
    folded = op("Conv", [x, const(folded_w)], f32(1, 16, 12, 12), **attrs)
    return x, padded, computed, folded


def test_values_computed_from_constants_alone_are_recognised():
    x, padded, computed, _ = _padded_conv()
    assert isolate.computed_from_constants(padded)
    assert isolate.computed_from_constants(const(np.ones(3, dtype=np.float32)))
    assert not isolate.computed_from_constants(x)  # a graph input
    assert not isolate.computed_from_constants(computed.output)  # reads x
    relu = op("Relu", [padded], f32(16, 8, 3, 3))  # deeper chains of constants too
    assert isolate.computed_from_constants(relu.output)


def test_a_conv_with_a_computed_weight_has_the_signature_of_the_folded_one():
    _, _, computed, folded = _padded_conv()
    a = isolate.signature(computed, OPSETS)
    assert a.text == isolate.signature(folded, OPSETS).text
    assert "const float[16,8,3,3]" in a.description
    built = isolate.build(computed, OPSETS)
    # The weight is an initializer (as after onnxruntime's folding), not a model input.
    assert [i.name for i in built.model.graph.input] == ["in0"]
    assert [tuple(t.dims) for t in built.model.graph.initializer] == [(16, 8, 3, 3)]


def test_computed_weight_is_priced_like_the_folded_graph(tmp_path):
    x, _, computed, folded = _padded_conv()
    model = MeasuredCost(DeviceSpec("cpu", threads=1), cache=tmp_path, fallback=FALLBACK,
                         fusion=False, **QUICK)  # fmt: skip
    unfolded_total = model(graph([computed.output], [x]))
    assert model.stats["timed"] == 1  # the Pad is free, and both Convs share one timing
    assert model(graph([folded.output], [x])) == unfolded_total
    assert model.stats["timed"] == 1


def test_a_reshaped_bias_after_a_conv_is_fused_like_a_constant_one(tmp_path):
    """Conv's bias spelled as ``Add(Conv(x, W), Reshape(b, [1, -1, 1, 1]))``: onnxruntime
    folds the Reshape, then fuses the Add into the Conv (ConvAddFusion)."""
    x = ir_input("x", f32(1, 8, 12, 12))
    w1, b = _weights()
    conv = op("Conv", [x, const(w1)], f32(1, 16, 12, 12), kernel_shape=[1, 1])
    shape = const(np.array([1, -1, 1, 1], dtype=np.int64))
    bias = op("Reshape", [const(b), shape], f32(1, 16, 1, 1)).output
    add = op("Add", [conv.output, bias], f32(1, 16, 12, 12))
    model = MeasuredCost(DeviceSpec("cpu", threads=1), cache=tmp_path, fallback=FALLBACK,
                         **QUICK)  # fmt: skip
    model.bind(graph([add.output], [x]))
    assert model.estimate(add).source == "fused"
    assert model.node_cost(add) == 0.0
