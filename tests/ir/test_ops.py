"""The op registry's hand-written type functions and numpy semantics agree with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import optimizer.onnx_io  # noqa: F401 - installs the ONNX hooks
from optimizer.ir import REGISTRY, DType, Node, TensorData, TensorType, constant, graph_input
from optimizer.ir.ops import broadcast_shapes

RNG = np.random.default_rng(0)

# (op, input shapes, attributes, constant inputs by position)
CASES = [
    ("Add", [(2, 3, 4), (4,)], {}, {}),
    ("Sub", [(2, 1, 4), (3, 1)], {}, {}),
    ("Mul", [(1,), (2, 5)], {}, {}),
    ("Div", [(3, 4), (3, 4)], {}, {}),
    ("Pow", [(3,), (3,)], {}, {}),
    ("Max", [(2, 3), (3,), (1, 3)], {}, {}),
    ("Min", [(2, 3), (2, 3)], {}, {}),
    ("Sum", [(2, 3), (3,), (2, 1)], {}, {}),
    ("Relu", [(2, 5)], {}, {}),
    ("Sigmoid", [(7,)], {}, {}),
    ("Tanh", [(2, 2)], {}, {}),
    ("Exp", [(3,)], {}, {}),
    ("Erf", [(4,)], {}, {}),
    ("Neg", [(4,)], {}, {}),
    ("Abs", [(4,)], {}, {}),
    ("Softmax", [(2, 6)], {"axis": -1}, {}),
    ("Softmax", [(2, 3, 4)], {"axis": 1}, {}),
    ("MatMul", [(2, 3, 4), (4, 5)], {}, {}),
    ("MatMul", [(4,), (2, 4, 3)], {}, {}),
    ("MatMul", [(3, 4), (4,)], {}, {}),
    ("Gemm", [(3, 4), (5, 4), (5,)], {"transB": 1, "alpha": 0.5, "beta": 2.0}, {}),
    ("Gemm", [(4, 3), (4, 5)], {"transA": 1}, {}),
    ("Transpose", [(2, 3, 4)], {"perm": [2, 0, 1]}, {}),
    ("Transpose", [(2, 3, 4)], {}, {}),
    ("Concat", [(2, 3), (2, 5)], {"axis": 1}, {}),
    ("Reshape", [(2, 3, 4), (3,)], {}, {1: np.array([0, -1, 2], np.int64)}),
    ("Gather", [(5, 3), (2, 2)], {"axis": 0}, {1: np.array([[0, 4], [2, 2]], np.int64)}),
    ("Cast", [(3,)], {"to": int(DType.INT32)}, {}),
    ("Conv", [(1, 3, 9, 9), (4, 3, 3, 3)], {"pads": [1, 1, 1, 1], "strides": [2, 2]}, {}),
    ("Conv", [(1, 2, 7, 7), (2, 1, 3, 3)], {"group": 2, "auto_pad": "SAME_UPPER"}, {}),
    ("MaxPool", [(1, 2, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, {}),
    ("AveragePool", [(1, 2, 8, 8)], {"kernel_shape": [2, 2], "strides": [2, 2]}, {}),
    ("GlobalAveragePool", [(2, 3, 5, 5)], {}, {}),
    ("Flatten", [(2, 3, 4)], {"axis": 2}, {}),
    ("Unsqueeze", [(3, 4), (2,)], {}, {1: np.array([0, -1], np.int64)}),
    ("Squeeze", [(1, 3, 1, 4), (1,)], {}, {1: np.array([2], np.int64)}),
    ("ReduceMean", [(2, 3, 4), (1,)], {"keepdims": 0}, {1: np.array([1], np.int64)}),
    ("ReduceSum", [(2, 3, 4), (2,)], {}, {1: np.array([0, 2], np.int64)}),
    ("Where", [(2, 3), (3,), (2, 1)], {}, {0: RNG.random((2, 3)) > 0.5}),
    ("Equal", [(2, 3), (3,)], {}, {}),
    ("Less", [(2, 3), (2, 3)], {}, {}),
    ("Shape", [(2, 3, 4)], {"start": 1}, {}),
]


def _run_ort(op, arrays, attrs):
    names = [f"i{k}" for k in range(len(arrays))]
    inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in zip(names, arrays)
    ]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph([node], "t", inputs, [onnx.ValueInfoProto(name="y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(names, arrays)))[0]


@pytest.mark.parametrize(("op", "shapes", "attrs", "consts"), CASES, ids=lambda c: str(c)[:40])
def test_type_function_and_reference_match_onnxruntime(op, shapes, attrs, consts):
    arrays = [
        consts[k] if k in consts else RNG.standard_normal(s).astype(np.float32)
        for k, s in enumerate(shapes)
    ]
    if op == "Pow":
        arrays[0] = np.abs(arrays[0]) + 0.1
    if op == "Div":
        arrays[1] = np.where(np.abs(arrays[1]) < 0.1, 1.0, arrays[1]).astype(np.float32)
    expected = _run_ort(op, arrays, attrs)
    values = [
        constant(TensorData.from_array(a))
        if k in consts
        else graph_input(f"i{k}", TensorType(DType.from_numpy(a.dtype), a.shape))
        for k, a in enumerate(arrays)
    ]
    node = Node.make(
        op, values, {k: v for k, v in attrs.items()}, output_types=[TensorType(DType.UNDEFINED)]
    )
    opdef = REGISTRY.lookup("", op)
    assert opdef is not None and opdef.infer is not None, f"{op} has no hand-written type function"
    (inferred,) = opdef.infer(node, 18)[:1]
    assert inferred == TensorType(DType.from_numpy(expected.dtype), expected.shape)
    if opdef.reference is not None:
        (got,) = opdef.reference(node, arrays)
        assert got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_broadcast_shapes_with_symbols():
    assert broadcast_shapes(("N", 1, 4), (3, 1)) == ("N", 3, 4)
    assert broadcast_shapes(("N",), ("N",)) == ("N",)
    assert broadcast_shapes(("N",), ("M",)) == (None,)
    with pytest.raises(ValueError):
        broadcast_shapes((2, 3), (4, 3))


def test_fallback_inference_uses_constant_shape_inputs():
    x = graph_input("x", TensorType(DType.FLOAT, (2, 3)))
    reps = constant(TensorData.from_array(np.array([2, 2], np.int64)))
    node = Node.make("Tile", [x, reps], output_types=[TensorType(DType.UNDEFINED)])
    assert REGISTRY.infer(node, 17) == [TensorType(DType.FLOAT, (4, 6))]


def test_unknown_custom_op_is_not_inferred():
    x = graph_input("x", TensorType(DType.FLOAT, (2,)))
    node = Node.make("Mystery", [x], domain="com.example", unique=True)
    assert REGISTRY.infer(node, 1) is None
    assert onnx.defs.has("Conv")  # sanity: the schema source is ONNX itself
