"""Every op's proof semantics agrees with onnxruntime on random concrete inputs.

The semantics functions are evaluated with the float back end (the same code the
prover runs on symbolic scalars), so a wrong index, axis or padding in them shows
up here as a numeric difference.
"""

from __future__ import annotations

import numpy as np
import pytest

import optimizer.onnx_io  # noqa: F401 - installs ONNX shape inference
from optimizer.ir import DType, Graph, ModelMeta, TensorData, TensorType, constant, graph_input
from optimizer.rewrite.expr import build_node
from optimizer.verify.arith import FLOAT_FUNCTIONS, FloatArith, SymArith
from optimizer.verify.numeric import run_side
from optimizer.verify.semantics import evaluate, supported_ops
from optimizer.verify.symbolic import float_value

RNG = np.random.default_rng(1)
I64 = np.int64


def _i(*v):
    return np.array(v, I64)


# (op, input shapes (None: omitted), attributes, constant inputs by position, opset)
CASES = [
    ("Identity", [(2, 3)], {}, {}),
    ("Neg", [(4,)], {}, {}),
    ("Abs", [(2, 2)], {}, {}),
    ("Relu", [(2, 5)], {}, {}),
    ("Exp", [(3,)], {}, {}),
    ("Log", [(3,)], {}, {0: np.abs(RNG.standard_normal(3)).astype(np.float32) + 0.1}),
    ("Sqrt", [(3,)], {}, {0: np.abs(RNG.standard_normal(3)).astype(np.float32)}),
    ("Tanh", [(2, 2)], {}, {}),
    ("Erf", [(4,)], {}, {}),
    ("Sigmoid", [(5,)], {}, {}),
    ("Softplus", [(5,)], {}, {}),
    ("Reciprocal", [(3,)], {}, {0: np.array([0.5, -2.0, 3.0], np.float32)}),
    ("Sign", [(4,)], {}, {0: np.array([1.5, 0.0, -2.0, 3.0], np.float32)}),
    ("Floor", [(4,)], {}, {}),
    ("Ceil", [(4,)], {}, {}),
    ("LeakyRelu", [(6,)], {"alpha": 0.1}, {}),
    ("Elu", [(6,)], {"alpha": 0.7}, {}),
    ("HardSigmoid", [(6,)], {"alpha": 0.3, "beta": 0.4}, {}),
    ("HardSwish", [(6,)], {}, {}),
    ("Gelu", [(6,)], {}, {}),
    ("Gelu", [(6,)], {"approximate": "tanh"}, {}),
    ("Clip", [(6,), (), ()], {}, {1: np.float32(-0.5), 2: np.float32(0.7)}),
    ("Dropout", [(2, 3)], {}, {}),
    ("Cast", [(3,)], {"to": int(DType.DOUBLE)}, {}),
    ("Cast", [(3,)], {"to": int(DType.FLOAT16)}, {}),
    ("CastLike", [(3,), (1,)], {}, {1: np.array([1.0], np.float64)}),
    ("Add", [(2, 3, 4), (4,)], {}, {}),
    ("Sub", [(2, 1, 4), (3, 1)], {}, {}),
    ("Mul", [(1,), (2, 5)], {}, {}),
    ("Div", [(3, 4), (4,)], {}, {1: np.array([0.5, -1.5, 2.0, 3.0], np.float32)}),
    ("Pow", [(3,), ()], {}, {1: np.float32(3)}),
    ("Pow", [(3,), ()], {}, {0: np.array([0.5, 2.0, 1.5], np.float32), 1: np.float32(0.5)}),
    ("Max", [(2, 3), (3,), (1, 3)], {}, {}),
    ("Min", [(2, 3), (2, 3)], {}, {}),
    ("Sum", [(2, 3), (3,), (2, 1)], {}, {}),
    ("Mean", [(2, 3), (3,)], {}, {}),
    ("PRelu", [(2, 3), (3,)], {}, {}),
    ("Where", [(2, 3), (3,), (2, 1)], {}, {0: RNG.random((2, 3)) > 0.5}),
    (
        "Equal",
        [(2, 3), (3,)],
        {},
        {1: np.array([0.0, 1.0, 2.0], np.float32), 0: np.array([[0, 1, 5], [2, 2, 2]], np.float32)},
    ),
    ("Less", [(2, 3), (2, 3)], {}, {}),
    ("GreaterOrEqual", [(2, 3), (3,)], {}, {}),
    ("MatMul", [(2, 3, 4), (4, 5)], {}, {}),
    ("MatMul", [(4,), (2, 4, 3)], {}, {}),
    ("MatMul", [(3, 4), (4,)], {}, {}),
    ("MatMul", [(2, 1, 2, 3), (3, 3, 2)], {}, {}),
    ("Gemm", [(3, 4), (5, 4), (5,)], {"transB": 1, "alpha": 0.5, "beta": 2.0}, {}),
    ("Gemm", [(4, 3), (4, 5)], {"transA": 1}, {}),
    ("Conv", [(1, 3, 5, 5), (4, 3, 3, 3)], {"pads": [1, 1, 1, 1], "strides": [2, 2]}, {}),
    ("Conv", [(2, 2, 5, 5), (2, 1, 3, 3), (2,)], {"group": 2, "auto_pad": "SAME_UPPER"}, {}),
    ("Conv", [(1, 2, 6), (3, 2, 2)], {"dilations": [2], "pads": [1, 0]}, {}),
    (
        "Conv",
        [(1, 4, 4, 4), (2, 2, 1, 2)],
        {"group": 2, "strides": [1, 2], "auto_pad": "SAME_LOWER"},
        {},
    ),
    ("Conv", [(1, 2, 4, 4), (2, 2, 2, 2)], {"auto_pad": "VALID"}, {}),
    (
        "Conv",
        [(1, 2, 5, 4), (4, 1, 2, 3)],
        {"group": 2, "strides": [2, 1], "pads": [0, 1, 2, 0], "dilations": [1, 2]},
        {},
    ),
    ("Conv", [(1, 1, 5, 5), (1, 1, 2, 2)], {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, {}),
    (
        "MaxPool",
        [(1, 2, 5, 5)],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {},
    ),
    ("MaxPool", [(1, 2, 6, 6)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, {}),
    ("AveragePool", [(1, 2, 4, 4)], {"kernel_shape": [2, 2], "strides": [2, 2]}, {}),
    ("AveragePool", [(1, 1, 4, 4)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, {}),
    (
        "AveragePool",
        [(1, 1, 4, 4)],
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        {},
    ),
    ("AveragePool", [(1, 1, 5)], {"kernel_shape": [2], "strides": [2], "ceil_mode": 1}, {}),
    ("GlobalAveragePool", [(2, 3, 3, 2)], {}, {}),
    ("GlobalMaxPool", [(2, 3, 4)], {}, {}),
    (
        "BatchNormalization",
        [(2, 3, 2, 2), (3,), (3,), (3,), (3,)],
        {"epsilon": 1e-3},
        {4: np.array([0.5, 1.0, 2.0], np.float32)},
    ),
    ("LayerNormalization", [(2, 3, 4), (4,), (4,)], {"epsilon": 1e-5}, {}),
    ("LayerNormalization", [(2, 3, 4), (3, 4)], {"axis": 1}, {}),
    ("InstanceNormalization", [(2, 3, 4), (3,), (3,)], {}, {}),
    ("Softmax", [(2, 6)], {"axis": -1}, {}),
    ("Softmax", [(2, 3, 4)], {"axis": 1}, {}),
    ("LogSoftmax", [(2, 4)], {}, {}),
    ("ReduceSum", [(2, 3, 4), (2,)], {}, {1: _i(0, 2)}),
    ("ReduceSum", [(2, 3, 4), (1,)], {"keepdims": 0}, {1: _i(-1)}),
    ("ReduceMean", [(2, 3, 4), (1,)], {"keepdims": 0}, {1: _i(1)}),
    ("ReduceMax", [(2, 3, 4)], {}, {}),
    ("ReduceMin", [(2, 3), (1,)], {}, {1: _i(0)}),
    ("ReduceProd", [(2, 3), (1,)], {}, {1: _i(1)}),
    ("ReduceSumSquare", [(2, 3), (1,)], {}, {1: _i(1)}),
    ("ReduceL2", [(2, 3), (1,)], {}, {1: _i(1)}),
    ("Transpose", [(2, 3, 4)], {"perm": [2, 0, 1]}, {}),
    ("Transpose", [(2, 3, 4)], {}, {}),
    ("Reshape", [(2, 3, 4), (3,)], {}, {1: _i(0, -1, 2)}),
    ("Reshape", [(2, 3, 4), (2,)], {}, {1: _i(4, 6)}),
    ("Flatten", [(2, 3, 4)], {"axis": 2}, {}),
    ("Flatten", [(2, 3, 4)], {"axis": 0}, {}),
    ("Squeeze", [(1, 3, 1, 4), (1,)], {}, {1: _i(2)}),
    ("Squeeze", [(1, 3, 1, 4)], {}, {}),
    ("Unsqueeze", [(3, 4), (2,)], {}, {1: _i(0, -1)}),
    ("Concat", [(2, 3), (2, 5), (2, 1)], {"axis": 1}, {}),
    ("Concat", [(2, 3), (1, 3)], {"axis": -2}, {}),
    ("Split", [(2, 6), (3,)], {"axis": 1}, {1: _i(1, 2, 3)}, 3),
    ("Split", [(5, 3)], {"axis": 0, "num_outputs": 2}, {}, 2),
    (
        "Slice",
        [(4, 5), (2,), (2,), (2,), (2,)],
        {},
        {1: _i(1, 0), 2: _i(3, 5), 3: _i(0, 1), 4: _i(1, 2)},
    ),
    (
        "Slice",
        [(4, 5), (1,), (1,), (1,), (1,)],
        {},
        {1: _i(-1), 2: _i(-(10**9)), 3: _i(1), 4: _i(-2)},
    ),
    ("Slice", [(4, 5), (1,), (1,)], {}, {1: _i(-3), 2: _i(100)}),
    ("Gather", [(5, 3), (2, 2)], {"axis": 0}, {1: np.array([[0, 4], [2, -1]], I64)}),
    ("Gather", [(2, 5), ()], {"axis": 1}, {1: np.array(3, I64)}),
    ("Pad", [(2, 3), (4,), ()], {}, {1: _i(1, 0, 0, 2), 2: np.float32(1.5)}),
    ("Pad", [(2, 3), (4,)], {}, {1: _i(0, 1, 1, 0)}),
    ("Pad", [(3, 4), (4,)], {}, {1: _i(-1, 2, 1, -2)}),
    ("Expand", [(3, 1), (3,)], {}, {1: _i(2, 3, 4)}),
    ("Tile", [(2, 3), (2,)], {}, {1: _i(2, 1)}),
    ("Shape", [(2, 3, 4)], {"start": 1}, {}),
    ("Size", [(2, 3, 4)], {}, {}),
    ("Sin", [(3,)], {}, {}),
    ("Cos", [(3,)], {}, {}),
    ("Greater", [(2, 3), (3,)], {}, {}),
    ("LessOrEqual", [(2, 3), (2, 1)], {}, {}),
    ("Not", [(3,)], {}, {0: np.array([True, False, True])}),
    ("Or", [(3,), (3,)], {}, {0: np.array([True, False, False]), 1: np.array([True, True, False])}),
    (
        "Xor",
        [(3,), (3,)],
        {},
        {0: np.array([True, False, False]), 1: np.array([True, True, False])},
    ),
    ("And", [(3,), (3,)], {}, {0: np.array([True, False, True]), 1: np.array([True, True, False])}),
]


def _case_id(case) -> str:
    return f"{case[0]}-" + "-".join(f"{k}{v}" for k, v in case[2].items())[:40]


def _build(case):
    op, shapes, attrs, consts = case[:4]
    n_out = case[4] if len(case) > 4 else 1
    inputs, feed = [], {}
    for pos, shape in enumerate(shapes):
        if pos in consts:
            data = np.asarray(consts[pos])
            inputs.append(constant(TensorData.from_array(data)))
            continue
        name = f"in{pos}"
        data = RNG.standard_normal(shape).astype(np.float32)
        if op == "Cast" and attrs["to"] == int(DType.FLOAT16):
            data = data * 1000.0 + np.float32(1 / 3)
        inputs.append(graph_input(name, TensorType(DType.FLOAT, shape)))
        feed[name] = data
    node = build_node(op, inputs, attrs, num_outputs=n_out, opset=21)
    return node, inputs, feed


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_semantics_match_onnxruntime(case):
    node, inputs, feed = _build(case)
    graph = Graph(
        tuple(v for v in inputs if v.node.is_input),
        node.outputs,
        tuple(f"out{i}" for i in range(len(node.outputs))),
        meta=ModelMeta(opset_imports=(("", 21),)),
    )
    expected = run_side(graph, feed)
    env = {}
    for v in inputs:
        if v.node.is_input:
            env[v] = np.asarray(feed[v.input_name].astype(np.float64), dtype=object)
    got = evaluate(list(node.outputs), env, FloatArith())
    for want, have in zip(expected, got, strict=False):
        have = np.asarray(have.tolist(), dtype=np.float64 if want.dtype.kind == "f" else want.dtype)
        assert have.shape == want.shape
        if want.dtype.kind == "f":
            np.testing.assert_allclose(have, want.astype(np.float64), rtol=2e-4, atol=2e-5)
        else:
            np.testing.assert_array_equal(have, want)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_symbolic_semantics_evaluated_at_a_point_match_onnxruntime(case):
    """The proof path: symbolic inputs, canonical polynomials, then the values substituted."""
    node, inputs, feed = _build(case)
    graph = Graph(
        tuple(v for v in inputs if v.node.is_input),
        node.outputs,
        tuple(f"out{i}" for i in range(len(node.outputs))),
        meta=ModelMeta(opset_imports=(("", 21),)),
    )
    expected = run_side(graph, feed)
    ar = SymArith()
    env, point = {}, {}
    for v in inputs:
        if v.node.is_input:
            data = feed[v.input_name]
            arr = np.empty(data.shape, dtype=object)
            for idx in np.ndindex(*data.shape):
                name = f"{v.input_name}[{idx}]"
                arr[idx] = ar.var(name)
                point[name] = float(data[idx])
            env[v] = arr
    got = evaluate(list(node.outputs), env, ar)
    for want, have in zip(expected, got, strict=False):
        values = [float_value(x, point, FLOAT_FUNCTIONS) for x in have.reshape(-1)]
        have = np.asarray(values, dtype=want.dtype).reshape(have.shape)
        if want.dtype.kind == "f":
            np.testing.assert_allclose(have, want, rtol=2e-4, atol=2e-5)
        else:
            np.testing.assert_array_equal(have, want)


def test_every_op_with_semantics_is_tested():
    tested = {c[0] for c in CASES}
    untested = set(supported_ops()) - tested
    assert not untested, f"ops with semantics but no ONNX comparison: {sorted(untested)}"
