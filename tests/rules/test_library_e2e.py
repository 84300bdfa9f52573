"""The rule library end to end: small ONNX models written the way exporters write them go
through ``optimizer.optimize`` (import, clean-up, the greedy ``apply-rules`` pass, export), come
out with the expected fused ops and fewer nodes, and compute the same outputs on onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import optimizer
from optimizer import onnx_io, runtime
from optimizer.passes.rewrite import apply_rules, default_rules

RNG = np.random.default_rng(7)


def _init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _rules_applied(model: onnx.ModelProto) -> list[str]:
    graph, _ = onnx_io.import_model(model, None)
    _, trace = apply_rules(graph, default_rules())
    return [step["rule"] for step in trace]


def _optimized(model: onnx.ModelProto) -> onnx.ModelProto:
    result = optimizer.optimize(model)  # checks numerically itself; compare again explicitly
    report = runtime.compare_models(model, result, num_samples=2)
    assert report.ok, report.summary()
    return result


def _ops(model: onnx.ModelProto) -> list[str]:
    return sorted(n.op_type for n in model.graph.node)


# ---------------------------------------------------------------- models


def conv_batchnorm(with_bias: bool) -> onnx.ModelProto:
    conv_inputs = ["x", "w", "b"] if with_bias else ["x", "w"]
    nodes = [
        helper.make_node(
            "Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], strides=[1, 1]
        ),
        helper.make_node(
            "BatchNormalization", ["c", "s", "beta", "mean", "var"], ["y"], epsilon=1e-3
        ),
        helper.make_node("Relu", ["y"], ["out"]),
    ]
    inits = [_init("w", _rand(4, 3, 3, 3)), _init("s", _rand(4)), _init("beta", _rand(4)),
             _init("mean", _rand(4)), _init("var", np.abs(_rand(4)) + 0.1)]  # fmt: skip
    if with_bias:
        inits.append(_init("b", _rand(4)))
    return _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("out", [1, 4, 8, 8])], inits)


def matmul_add() -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["t"]),
        helper.make_node("Add", ["t", "b"], ["y"]),
    ]
    inits = [_init("w", _rand(8, 16)), _init("b", _rand(16))]
    return _model(nodes, [_vi("x", [4, 8])], [_vi("y", [4, 16])], inits)


def qkv_projections() -> onnx.ModelProto:
    nodes, inits, outputs = [], [], []
    for name in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{name}"], [f"t{name}"]),
                  helper.make_node("Add", [f"t{name}", f"b{name}"], [name])]  # fmt: skip
        inits += [_init(f"w{name}", _rand(16, 16)), _init(f"b{name}", _rand(16))]
        outputs.append(_vi(name, [2, 5, 16]))
    return _model(nodes, [_vi("x", [2, 5, 16])], outputs, inits)


def layernorm_decomposed(opset: int, square: str) -> onnx.ModelProto:
    """torch's export of nn.LayerNorm before opset 17 (axes as attribute) or as opset 18 writes
    it (axes as input); the variance from Pow(d, 2) or Mul(d, d)."""
    inits = [_init("eps", np.float32(1e-5)), _init("scale", _rand(8)), _init("bias", _rand(8))]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "axes"))

    def mean(src, dst):
        if opset >= 18:
            return helper.make_node("ReduceMean", [src, "axes"], [dst])
        return helper.make_node("ReduceMean", [src], [dst], axes=[-1])

    if square == "pow":
        inits.append(_init("two", np.float32(2.0)))
        sq = helper.make_node("Pow", ["d", "two"], ["sq"])
    else:
        sq = helper.make_node("Mul", ["d", "d"], ["sq"])
    nodes = [
        mean("x", "mu"),
        helper.make_node("Sub", ["x", "mu"], ["d"]),
        sq,
        mean("sq", "var"),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["n"]),
        helper.make_node("Mul", ["n", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["y"]),
    ]
    return _model(nodes, [_vi("x", [2, 5, 8])], [_vi("y", [2, 5, 8])], inits, opset=opset)


def gelu_decomposed() -> onnx.ModelProto:
    """torch's export of nn.GELU(): x * (erf(x / sqrt(2)) + 1) * 0.5, float32 constants."""
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["a"]),
        helper.make_node("Erf", ["a"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["p"]),
        helper.make_node("Mul", ["x", "p"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
    ]
    inits = [
        _init("sqrt2", np.float32(np.sqrt(2.0))),
        _init("one", np.float32(1.0)),
        _init("half", np.float32(0.5)),
    ]
    return _model(nodes, [_vi("x", [2, 8])], [_vi("y", [2, 8])], inits, opset=20)


def double_transposes() -> onnx.ModelProto:
    """A transpose pair that cancels (as around attention heads) and one that composes."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t1"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["t2"], ["t3"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["t3"], ["y"], perm=[0, 1, 3, 2]),
    ]
    return _model(nodes, [_vi("x", [2, 3, 4, 5])], [_vi("y", [2, 4, 5, 3])], [])


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_batchnorm_folds_into_conv(with_bias):
    model = conv_batchnorm(with_bias)
    rule = "batchnorm-into-conv-bias" if with_bias else "batchnorm-into-conv"
    assert rule in _rules_applied(model)
    result = _optimized(model)
    assert _ops(result) == ["Conv", "Relu"]


def test_matmul_add_becomes_gemm():
    model = matmul_add()
    assert _rules_applied(model) == ["matmul-add-to-gemm"]
    assert _ops(_optimized(model)) == ["Gemm"]


def test_qkv_projections_merge():
    model = qkv_projections()
    assert "qkv-merge" in _rules_applied(model)
    result = _optimized(model)
    assert _ops(result) == ["Add", "MatMul", "Split"]
    assert [o.name for o in result.graph.output] == ["q", "k", "v"]


@pytest.mark.parametrize(
    ("opset", "square"), [(17, "pow"), (17, "mul"), (18, "pow"), (18, "mul")], ids=lambda v: str(v)
)
def test_layernorm_recognised(opset, square):
    model = layernorm_decomposed(opset, square)
    assert len(model.graph.node) == 9
    result = _optimized(model)
    assert _ops(result) == ["LayerNormalization"]
    (node,) = result.graph.node
    eps = next(a.f for a in node.attribute if a.name == "epsilon")
    assert eps == pytest.approx(1e-5)


def test_gelu_recognised():
    model = gelu_decomposed()
    assert "gelu-erf" in _rules_applied(model)
    assert _ops(_optimized(model)) == ["Gelu"]


def test_gelu_left_alone_below_opset_20():
    model = gelu_decomposed()
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 17))
    onnx.checker.check_model(model)
    result = _optimized(model)
    assert "Gelu" not in _ops(result)


def test_double_transposes_cancel_and_compose():
    model = double_transposes()
    applied = _rules_applied(model)
    assert any(r.startswith("transpose-transpose") for r in applied)
    result = _optimized(model)
    assert _ops(result) == ["Relu", "Transpose"]
    (transpose,) = [n for n in result.graph.node if n.op_type == "Transpose"]
    perm = list(next(a.ints for a in transpose.attribute if a.name == "perm"))
    assert perm == [0, 2, 3, 1]
