"""``layernorm-of-sum`` (rules/transformer.rules) and the price of onnxruntime's
SkipLayerNormalization fusion on the CPU (optimizer/cost/fusion.py).

onnxruntime fuses an Add of two same-shape tensors into the LayerNormalization reading it
(SkipLayerNormalization); its CPU kernel (1.32) is several times slower than the two ops it
replaces. Spelling the Add as a two-input Sum computes the same values and keeps onnxruntime's
LayerNormalization kernel. The default CPU search takes the rule on a post-LN residual block,
and the outputs stay bit-identical (tests/verify/test_library.py proves the rule).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import optimizer
from optimizer import onnx_io, runtime
from optimizer.api import OptimizeOptions, cost_model
from optimizer.cost.fusion import SKIP_LAYERNORM_FACTOR, skip_layernorm_fused

RNG = np.random.default_rng(11)


def residual_block(residual: str = "x") -> onnx.ModelProto:
    """y = LayerNorm(x @ w + residual): BERT's post-LN residual (``residual`` "x"), seq 16,
    width 32; "c" adds a constant of the same shape instead."""
    d = 32
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", residual], ["s"]),
        helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, epsilon=1e-5),
    ]
    inits = [
        numpy_helper.from_array((RNG.standard_normal((d, d)) * 0.2).astype(np.float32), "w"),
        numpy_helper.from_array(RNG.standard_normal(d).astype(np.float32), "g"),
        numpy_helper.from_array(RNG.standard_normal(d).astype(np.float32), "b"),
        numpy_helper.from_array(RNG.standard_normal((1, 16, d)).astype(np.float32), "c"),
    ][: 4 if residual == "c" else 3]
    graph = helper.make_graph(
        nodes, "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, d])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_cpu_search_spells_the_residual_add_as_a_sum():
    model = residual_block()
    out = optimizer.optimize(model, guard=False)
    ops = [n.op_type for n in out.graph.node]
    assert "Sum" in ops and "Add" not in ops, ops
    report = runtime.compare_models(model, out, num_samples=2, rtol=0, atol=0)
    assert report.ok, report.summary()  # the same additions in the same order


def test_only_the_cpu_price_sees_the_fusion():
    graph, _ = onnx_io.import_model(residual_block(), None)
    norm = next(n for n in graph.nodes() if n.op == "LayerNormalization")
    assert skip_layernorm_fused(norm)
    cpu = cost_model(OptimizeOptions(device="cpu"))
    other = cost_model(OptimizeOptions(device="cuda"))  # building it needs no GPU
    assert cpu.node_cost(norm) == pytest.approx(other.node_cost(norm) * SKIP_LAYERNORM_FACTOR)


def test_an_add_of_a_constant_is_not_a_skip():
    """An Add of a constant is not a skip connection: no fusion priced, no Sum written."""
    model = residual_block("c")
    graph, _ = onnx_io.import_model(model, None)
    norm = next(n for n in graph.nodes() if n.op == "LayerNormalization")
    assert norm.inputs[0].node.op == "Add"
    assert not skip_layernorm_fused(norm)
    out = optimizer.optimize(model, guard=False)
    assert "Sum" not in [n.op_type for n in out.graph.node]
