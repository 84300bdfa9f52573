"""The rules that batch products sharing a weight (``*-batch-shared-weight*``, rules/matmul.rules)
and ``slice-slice`` (rules/layout.rules): each applies on a small model written with
onnx.helper, the result computes the same outputs on onnxruntime, and the verifier proves it.

The batching rules are what makes NasRNN fast (the input-side products of all time steps read
their weight once); ``slice-slice`` composes the row slices that successive batchings leave.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import optimizer
from optimizer import onnx_io, runtime
from optimizer.passes.rewrite import apply_rules, default_rules
from optimizer.rewrite import load_rules
from optimizer.verify import verify_rule

RNG = np.random.default_rng(3)
RULES = {r.name: r for r in load_rules()}
BATCHING = {
    # rule -> (op, attributes, with a bias)
    "matmul-batch-shared-weight": ("MatMul", {}, False),
    "gemm-batch-shared-weight-transb": ("Gemm", {"transB": 1}, False),
    "gemm-batch-shared-weight-bias": ("Gemm", {}, True),
    "gemm-batch-shared-weight-bias-transb": ("Gemm", {"transB": 1}, True),
}


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _init(name: str, *shape) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def shared_weight_model(op: str, attrs: dict, bias: bool, steps: int = 3) -> onnx.ModelProto:
    """``steps`` independent rows, each multiplied by one weight (as an RNN's input side),
    summed: y = sum_t op(x_t, w [, b]). The weight (64 KB) is large enough that reading it
    once pays for the Concat and the Slices in the analytic cost model."""
    k, n = 128, 128
    weight = _init("w", n, k) if attrs.get("transB") else _init("w", k, n)
    inits = [weight] + ([_init("b", n)] if bias else [])
    nodes, outs = [], []
    for t in range(steps):
        ins = [f"x{t}", "w"] + (["b"] if bias else [])
        nodes.append(helper.make_node(op, ins, [f"y{t}"], **attrs))
        outs.append(f"y{t}")
    nodes.append(helper.make_node("Sum", outs, ["out"]))
    inputs = [_vi(f"x{t}", [1, k]) for t in range(steps)]
    return _model(nodes, inputs, [_vi("out", [1, n])], inits)


def _rewritten(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    graph, _ = onnx_io.import_model(model, None)
    result, trace = apply_rules(graph, default_rules())
    result.check()
    return onnx_io.to_proto(result), [step["rule"] for step in trace]


@pytest.mark.parametrize("name", sorted(BATCHING))
def test_batching_applies_and_keeps_the_outputs(name):
    op, attrs, bias = BATCHING[name]
    model = shared_weight_model(op, attrs, bias)
    out, applied = _rewritten(model)
    assert applied.count(name) == 2, applied  # three rows, two pairwise batchings
    ops = [n.op_type for n in out.graph.node]
    assert ops.count(op) == 1, ops  # the weight is read by one product
    report = runtime.compare_models(model, out, num_samples=2, rtol=1e-4, atol=1e-5)
    assert report.ok, report.summary()


def test_batched_rows_end_as_single_slices():
    """Batching a third row slices the earlier batch's result again; slice-slice composes
    those, so each row is one Slice of the final product. One composition alone gains nothing
    while the inner slice has another reader (greedy does not take it); the default search's
    equality saturation composes them all."""
    model = shared_weight_model("Gemm", {"transB": 1}, False)
    out = optimizer.optimize(model, guard=False)  # checks the outputs itself
    slices = [n for n in out.graph.node if n.op_type == "Slice"]
    assert len(slices) == 3
    producers = {o: n.op_type for n in out.graph.node for o in n.output}
    assert all(producers.get(s.input[0]) == "Gemm" for s in slices)


def test_dependent_products_are_not_batched():
    """y2 = relu(x@w)@w reads the first product: stacking the two inputs would read a result
    before it exists, and the multi-root matcher refuses it."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y1"]),
        helper.make_node("Relu", ["y1"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["y2"]),
    ]
    model = _model(nodes, [_vi("x", [1, 128])], [_vi("y2", [1, 128])], [_init("w", 128, 128)])
    out, applied = _rewritten(model)
    assert not [r for r in applied if "batch-shared-weight" in r]
    assert [n.op_type for n in out.graph.node].count("MatMul") == 2


def test_slice_of_slice_is_one_slice():
    def ints(name, *values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    nodes = [
        helper.make_node("Slice", ["x", "s1", "e1", "ax"], ["a"]),
        helper.make_node("Slice", ["a", "s2", "e2", "ax"], ["y"]),
    ]
    inits = [ints("s1", 1), ints("e1", 5), ints("s2", 1), ints("e2", 3), ints("ax", 0)]
    model = _model(nodes, [_vi("x", [6, 4])], [_vi("y", [2, 4])], inits)
    out, applied = _rewritten(model)
    assert applied == ["slice-slice"]
    assert [n.op_type for n in out.graph.node] == ["Slice"]
    report = runtime.compare_models(model, out, num_samples=2, rtol=1e-4, atol=1e-5)
    assert report.ok, report.summary()


@pytest.mark.parametrize("name", [*sorted(BATCHING), "slice-slice"])
def test_verifier_proves_the_rule(name):
    result = verify_rule(RULES[name], all_shapes=False)
    assert result.status == "proved", f"{result.status}: {result.message}"
    assert result.numeric == "ok", result.numeric
    assert result.numeric_instances >= 24, result.message
