"""The strided-pool rules (``conv1x1(-bias)-of-strided-avgpool``, rules/conv.rules) and the
pricing that makes them pay: a strided window reads only the pixels it touches
(:func:`optimizer.cost.analytic.touched_fraction`), and a pool onnxruntime leaves in its plain
NCHW kernel costs :data:`optimizer.cost.layout.UNBLOCKED_POOL_FACTOR` times its price.

NASNet-A's reduction cells subsample with a 1x1 average pool of stride 2 and then run a 1x1
conv; the conv with stride 2 reads the same pixels without the pool's kernel.
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
from optimizer.cost.analytic import node_features, touched_fraction
from optimizer.cost.layout import (
    BLOCKED_POOL_FACTOR,
    UNBLOCKED_POOL_FACTOR,
    blocked,
    reordered_inputs,
)

RNG = np.random.default_rng(11)


def reduction_path(channels: int = 44, size: int = 15, bias: bool = True) -> onnx.ModelProto:
    """relu -> 1x1 average pool, stride 2 -> 1x1 conv (odd input size: the last row and
    column are dropped by both)."""
    c = channels
    conv_inputs = ["pooled", "w", "b"] if bias else ["pooled", "w"]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("AveragePool", ["r"], ["pooled"], kernel_shape=[1, 1], strides=[2, 2]),
        helper.make_node("Conv", conv_inputs, ["y"]),
    ]
    inits = [numpy_helper.from_array(RNG.standard_normal((c, c, 1, 1)).astype(np.float32), "w")]
    if bias:
        inits.append(numpy_helper.from_array(RNG.standard_normal(c).astype(np.float32), "b"))
    out = (size + 1) // 2
    return checked_model(
        nodes, "reduction",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, out, out])],
        inits,
    )  # fmt: skip


@pytest.mark.parametrize("bias", [True, False])
def test_search_folds_the_strided_pool_into_the_conv(bias):
    model = reduction_path(bias=bias)
    out = optimizer.optimize(model, guard=False)  # checks the outputs itself
    ops = [n.op_type for n in out.graph.node]
    assert "AveragePool" not in ops, ops
    (conv,) = [n for n in out.graph.node if n.op_type == "Conv"]
    strides = [list(a.ints) for a in conv.attribute if a.name == "strides"]
    assert strides == [[2, 2]]
    report = runtime.compare_models(model, out, num_samples=2, rtol=1e-5, atol=1e-6)
    assert report.ok, report.summary()


def test_a_pool_with_a_real_window_is_left_to_the_pool_rules():
    """A 3x3 pool averages neighbours: not a subsampling, so the strided-pool rule must not
    match it (the conv would see different values)."""
    model = reduction_path(channels=16)
    pool = model.graph.node[1]
    del pool.attribute[:]
    pool.attribute.extend(
        [helper.make_attribute("kernel_shape", [3, 3]), helper.make_attribute("strides", [2, 2])]
    )
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_value = 7
    model.graph.output[0].type.tensor_type.shape.dim[3].dim_value = 7
    out = optimizer.optimize(model, guard=False)
    report = runtime.compare_models(model, out, num_samples=2, rtol=1e-5, atol=1e-6)
    assert report.ok, report.summary()
    convs = [n for n in out.graph.node if n.op_type == "Conv" and not any(
        a.name == "group" and a.i > 1 for a in n.attribute)]  # fmt: skip
    assert all(
        [list(a.ints) for a in n.attribute if a.name == "strides"] in ([], [[1, 1]]) for n in convs
    )


def test_touched_fraction_counts_the_pixels_a_strided_window_reads():
    graph, _ = onnx_io.import_model(reduction_path(size=16), None)
    pool = next(n for n in graph.nodes() if n.op == "AveragePool")
    conv = next(n for n in graph.nodes() if n.op == "Conv")
    assert touched_fraction(pool) == pytest.approx(0.25)  # 8x8 of 16x16 pixels
    assert touched_fraction(conv) == 1.0  # stride 1 reads everything
    flops, read, written = node_features(pool)
    assert read == pytest.approx(written)  # reads one pixel per output


def test_pools_are_priced_by_their_layout_on_the_cpu():
    cpu = cost_model(OptimizeOptions(device="cpu"))
    plain_model = type(cpu)(cpu.base)  # the same model without the CPU layout correction
    for channels, is_blocked in ((44, False), (48, True)):
        graph, _ = onnx_io.import_model(reduction_path(channels=channels), None)
        pool = next(n for n in graph.nodes() if n.op == "AveragePool")
        assert blocked(pool) is is_blocked
        factor = BLOCKED_POOL_FACTOR if is_blocked else UNBLOCKED_POOL_FACTOR
        reorders = sum(cpu._copy_cost(v) for v in reordered_inputs(pool))
        assert bool(reorders) is is_blocked  # the relu reading the graph input runs plain
        assert cpu.node_cost(pool) == pytest.approx(plain_model.node_cost(pool) * factor + reorders)
    assert UNBLOCKED_POOL_FACTOR > 1.0 > BLOCKED_POOL_FACTOR


def shifted_reduction_path(size: int, channels: int = 16) -> onnx.ModelProto:
    """NASNet-A's second reduction path: shift the image by one pixel (zero pad at the end,
    drop the first row and column), subsample with a 1x1 average pool of stride 2, 1x1 conv."""
    c = channels
    ints = lambda name, *v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Pad", ["r", "pads"], ["padded"]),
        helper.make_node("Slice", ["padded", "one", "big", "two", "one"], ["rows"]),
        helper.make_node("Slice", ["rows", "one", "big", "three", "one"], ["shifted"]),
        helper.make_node(
            "AveragePool", ["shifted"], ["pooled"], kernel_shape=[1, 1], strides=[2, 2]
        ),
        helper.make_node("Conv", ["pooled", "w", "b"], ["y"]),
    ]  # fmt: skip
    inits = [
        ints("pads", 0, 0, 0, 0, 0, 0, 1, 1), ints("one", 1), ints("big", 2**62),
        ints("two", 2), ints("three", 3),
        numpy_helper.from_array(RNG.standard_normal((c, c, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(RNG.standard_normal(c).astype(np.float32), "b"),
    ]  # fmt: skip
    out = (size + 1) // 2
    return checked_model(
        nodes, "shifted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, out, out])],
        inits,
    )  # fmt: skip


@pytest.mark.parametrize("size", [15, 16])
def test_shifted_subsampling_becomes_one_strided_slice(size):
    """Pad + two Slices + pool + conv with stride become one Slice taking every other pixel
    from the second on, read by a stride-1 conv that pads the missing last row and column
    (odd sizes) itself: slice-slice-other-axis, conv1x1-of-strided-avgpool,
    conv1x1-bias-strided-of-stepped-slice, strided-slice-of-end-pad, pad-into-conv(-bias) and
    pad-zero-widths."""
    model = shifted_reduction_path(size)
    out = optimizer.optimize(model, guard=False)
    ops = [n.op_type for n in out.graph.node]
    assert sorted(ops) == ["Conv", "Relu", "Slice"], ops
    (slice_node,) = [n for n in out.graph.node if n.op_type == "Slice"]
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    assert list(inits[slice_node.input[4]]) == [2, 2]  # steps
    assert list(inits[slice_node.input[1]]) == [1, 1]  # starts
    (conv,) = [n for n in out.graph.node if n.op_type == "Conv"]
    attrs = {a.name: list(a.ints) for a in conv.attribute}
    assert attrs.get("strides", [1, 1]) == [1, 1]
    assert attrs.get("pads", [0, 0, 0, 0]) == [0, 0, size % 2, size % 2]
    report = runtime.compare_models(model, out, num_samples=2, rtol=1e-5, atol=1e-6)
    assert report.ok, report.summary()
