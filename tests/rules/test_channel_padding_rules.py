"""The channel-padding rules (rules/conv.rules) and the CPU layout correction of the cost model
(optimizer/cost/layout.py).

onnxruntime's CPU layout pass leaves a depthwise Conv whose channel count is not a multiple of
4 in its slow NCHW kernel. The rules pad such a conv's channels with zeros and slice them off
after; the pointwise conv that reads the slice absorbs it into zero weights, and a Pad after a
pointwise conv (and its Relu) disappears into zero filters. On a small
NASNet-like separable-conv block (11 channels) the default search pads every depthwise conv and
keeps the outputs (tests/verify/test_library.py proves every rule).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rules_onnx_helpers import checked_model

import optimizer
from optimizer import onnx_io, runtime
from optimizer.api import OptimizeOptions, cost_model
from optimizer.cost.layout import (
    UNBLOCKED_DEPTHWISE_FACTOR,
    blocked,
    reordered_inputs,
    unblocked_depthwise,
)

RNG = np.random.default_rng(5)


def _init(name: str, *shape) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.3).astype(np.float32), name)


def separable_block(channels: int = 11, size: int = 16) -> onnx.ModelProto:
    """NASNet's separable conv twice over: 1x1 conv, relu, depthwise 5x5, 1x1 conv (with the
    folded batch norm's bias), relu, depthwise 3x3, 1x1 conv; plus a 3x3 average pool branch
    that does not count the padding; the branches are added."""
    c = channels
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["a0"]),
        helper.make_node("Relu", ["a0"], ["r0"]),
        helper.make_node("Conv", ["r0", "dw1"], ["d1"], group=c, pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["d1", "pw1", "pb1"], ["p1"]),
        helper.make_node("Relu", ["p1"], ["r1"]),
        helper.make_node("Conv", ["r1", "dw2"], ["d2"], group=c, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d2", "pw2", "pb2"], ["p2"]),
        helper.make_node(
            "AveragePool", ["a0"], ["pool"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
            count_include_pad=0,
        ),
        helper.make_node("Add", ["p2", "pool"], ["y"]),
    ]  # fmt: skip
    inits = [
        _init("w0", c, 16, 1, 1), _init("b0", c), _init("dw1", c, 1, 5, 5),
        _init("pw1", c, c, 1, 1), _init("pb1", c), _init("dw2", c, 1, 3, 3),
        _init("pw2", c, c, 1, 1), _init("pb2", c),
    ]  # fmt: skip
    return checked_model(
        nodes, "separable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, size, size])],
        inits,
    )  # fmt: skip


def _depthwise_channels(model: onnx.ModelProto) -> list[int]:
    return sorted(
        a.i for n in model.graph.node if n.op_type == "Conv" for a in n.attribute
        if a.name == "group" and a.i > 1
    )  # fmt: skip


def test_search_pads_every_depthwise_conv_on_the_cpu():
    model = separable_block()
    out = optimizer.optimize(model, guard=False)  # checks the outputs itself
    assert _depthwise_channels(out) == [12, 12, 12]  # the pool became a padded one too
    ops = [n.op_type for n in out.graph.node]
    assert "AveragePool" not in ops
    # the 1x1 convs before the depthwise ones make the zero channels themselves (zero
    # filters), the ones after read them through zero weights: no Pad is left, and only the
    # pool branch slices its channels off again
    assert "Pad" not in ops, ops
    assert ops.count("Slice") == 1, ops
    report = runtime.compare_models(model, out, num_samples=2, rtol=1e-4, atol=1e-5)
    assert report.ok, report.summary()


def test_no_padding_where_the_channels_are_blocked_already():
    out = optimizer.optimize(separable_block(channels=12), guard=False)
    assert "Pad" not in [n.op_type for n in out.graph.node]
    assert set(_depthwise_channels(out)) == {12}


def test_layout_correction_prices_only_unblocked_depthwise_convs_on_the_cpu():
    graph, _ = onnx_io.import_model(separable_block(), None)
    convs = [n for n in graph.nodes() if n.op == "Conv"]
    unblocked = [n for n in convs if unblocked_depthwise(n)]
    assert len(unblocked) == 2  # the two depthwise convs, not the 1x1 convs
    cpu = cost_model(OptimizeOptions(device="cpu"))
    plain = type(cpu)(cpu.base)  # the same model without the CPU layout correction
    for node in convs:
        reorders = sum(cpu._copy_cost(v) for v in reordered_inputs(node))
        factor = UNBLOCKED_DEPTHWISE_FACTOR if node in unblocked else 1.0
        assert cpu.node_cost(node) == pytest.approx(plain.node_cost(node) * factor + reorders)


def test_layout_model_follows_onnxruntimes_blocked_layout():
    """What onnxruntime 1.32's CPU layout pass does with the block (probed, see layout.py):
    the 1x1 conv reading the graph input runs blocked (a reorder on its input); the depthwise
    convs over 11 channels and the pool over 11 channels do not, so the values between them
    and the blocked convs are reordered; the Relu follows its input's layout."""
    graph, _ = onnx_io.import_model(separable_block(), None)
    nodes = [n for n in graph.nodes() if not n.is_source]
    ops = [(n.op, blocked(n)) for n in nodes]
    assert ("AveragePool", False) in ops
    depthwise = [n for n in nodes if n.op == "Conv" and n.attr("group", 1) > 1]
    pointwise = [n for n in nodes if n.op == "Conv" and n.attr("group", 1) == 1]
    assert not any(blocked(n) for n in depthwise)
    assert all(blocked(n) for n in pointwise)
    relus = [n for n in nodes if n.op == "Relu"]
    assert all(blocked(n) == blocked(n.inputs[0].node) for n in relus)
    # every blocked/plain boundary on a data input is one reorder, charged to the reader
    for node in nodes:
        for value in reordered_inputs(node):
            assert blocked(value.node) != blocked(node)
    assert len(reordered_inputs(pointwise[0])) == 1  # the graph input
    padded, _ = onnx_io.import_model(separable_block(channels=16), None)
    assert all(blocked(n) for n in padded.nodes() if n.op in ("Conv", "AveragePool", "Relu"))
