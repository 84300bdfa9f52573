"""Every VJP rule against central finite differences.

Each case is a one- or two-node ONNX model. Its VJP graph (built by graphopt, run on
onnxruntime in float32) must match the finite-difference VJP ``d <u, f(x)> / dx`` computed in
float64 by ONNX's reference evaluator on the same model in double precision, for every
floating-point input (weights, biases, statistics and exponents included). Inputs are random
normal, so kinks (Relu at 0, ties in max pooling) are hit with probability ~0 at eps=1e-6.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops._op import OpRunUnaryNum
from scipy.special import erf

from optimizer import onnx_io
from optimizer.explain.autodiff import build_vjp, supported_ops
from optimizer.explain.errors import AutodiffError, UnsupportedOpError

EPS = 1e-6


class _Erf64(OpRunUnaryNum):
    """Erf in the input's precision (the reference evaluator's own Erf rounds to float32)."""

    op_domain = ""

    def _run(self, x):
        return (erf(x).astype(x.dtype),)


class _Gelu64(OpRun):
    """Gelu in float64 (the evaluator expands ONNX's function body, whose Erf is float32)."""

    op_domain = ""

    def _run(self, x, approximate="none"):
        if approximate == "tanh":
            inner = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)
            return ((0.5 * x * (1 + np.tanh(inner))).astype(x.dtype),)
        return ((0.5 * x * (1 + erf(x / np.sqrt(2)))).astype(x.dtype),)


class _Softmax11(OpRun):
    """Softmax before opset 13: normalized over every dim from ``axis`` on (the evaluator
    applies the opset-13 meaning)."""

    op_domain = ""

    def _run(self, x, axis=1):
        axes = tuple(range(axis % x.ndim, x.ndim))
        e = np.exp(x - x.max(axis=axes, keepdims=True))
        return (e / e.sum(axis=axes, keepdims=True),)


def _reference(model):
    ops = [type("Erf", (_Erf64,), {}), type("Gelu", (_Gelu64,), {})]
    if model.opset_import[0].version < 13:
        ops.append(type("Softmax", (_Softmax11,), {}))
    return ReferenceEvaluator(model, new_ops=ops)


@dataclass
class Case:
    """One model: ``inputs`` are (name, shape, kind) with kind "x" (float graph input, gets a
    gradient), "pos" (positive float graph input), "int" (int64 constant given as ``data``)
    or "const" (float constant from ``data``); ``nodes`` are (op, inputs, outputs, attrs)."""

    id: str
    nodes: list
    inputs: list
    opset: int = 18
    data: dict = field(default_factory=dict)
    output: str = "y"
    feed_shapes: dict = field(default_factory=dict)  # runtime shapes of symbolic inputs


def _node(op, inputs, outputs=("y",), **attrs):
    return (op, list(inputs), list(outputs), attrs)


def _unary(op, opset=18, kind="x", shape=(2, 3, 4), **attrs):
    return Case(op if not attrs else f"{op}-{attrs}", [_node(op, ["a"], **attrs)],
                [("a", shape, kind)], opset)  # fmt: skip


def _binary(op, sa, sb, kinds=("x", "x"), opset=18, tag=""):
    return Case(f"{op}{tag}-{sa}-{sb}", [_node(op, ["a", "b"])],
                [("a", sa, kinds[0]), ("b", sb, kinds[1])], opset)  # fmt: skip


def _ints(*v):
    return np.array(v, dtype=np.int64)


CASES: list[Case] = [
    # unary elementwise
    *[
        _unary(op)
        for op in ("Relu", "Sigmoid", "Tanh", "Exp", "Erf", "Neg", "Abs", "Softplus", "Identity")
    ],  # fmt: skip
    *[_unary(op, kind="pos") for op in ("Log", "Sqrt", "Reciprocal")],
    _unary("LeakyRelu", alpha=0.2),
    _unary("Gelu", opset=20),
    _unary("Gelu", opset=20, approximate="tanh"),
    Case("Dropout-eval", [_node("Dropout", ["a"], ratio=0.5)], [("a", (2, 3), "x")], 10),
    Case(
        "Clip",
        [_node("Clip", ["a", "lo", "hi"])],
        [("a", (3, 4), "x"), ("lo", (), "x"), ("hi", (), "x")],
        13,
        data={"lo": np.float64(-0.3), "hi": np.float64(0.4)},
    ),  # fmt: skip
    Case(
        "Clip-min-only",
        [_node("Clip", ["a", "lo"])],
        [("a", (3, 4), "x"), ("lo", (), "const")],
        13,
        data={"lo": np.float64(-0.2)},
    ),  # fmt: skip
    Case("Cast-same-type", [_node("Cast", ["a"], to=TensorProto.FLOAT)], [("a", (3,), "x")]),
    # binary elementwise with broadcasting
    _binary("Add", (2, 3, 4), (3, 1)),
    _binary("Sub", (4,), (2, 3, 4)),
    _binary("Mul", (2, 3, 4), ()),
    _binary("Div", (2, 1, 4), (3, 1), kinds=("x", "pos")),
    _binary("Pow", (2, 3), (3,), kinds=("pos", "x")),
    Case(
        "Pow-const-exponent",
        [_node("Pow", ["a", "b"])],
        [("a", (2, 3), "pos"), ("b", (), "const")],
        data={"b": np.float64(2.5)},
    ),  # fmt: skip
    Case(
        "Add-symbolic-broadcast",
        [_node("Add", ["a", "b"])],
        [("a", ("N", 3), "x"), ("b", ("K", 3), "x")],
        feed_shapes={"a": (4, 3), "b": (1, 3)},
    ),  # fmt: skip
    Case(
        "Mul-symbolic-same",
        [_node("Mul", ["a", "b"])],
        [("a", ("N", 3), "x"), ("b", ("N", 1), "x")],
        feed_shapes={"a": (2, 3), "b": (2, 1)},
    ),  # fmt: skip
    Case(
        "Where",
        [_node("Where", ["c", "a", "b"])],
        [("c", (3, 4), "bool"), ("a", (3, 4), "x"), ("b", (4,), "x")],
    ),  # fmt: skip
    Case(
        "Sum",
        [_node("Sum", ["a", "b", "c"])],
        [("a", (2, 3), "x"), ("b", (3,), "x"), ("c", (2, 1), "x")],
    ),  # fmt: skip
    Case(
        "Expand",
        [_node("Expand", ["a", "s"])],
        [("a", (3, 1), "x"), ("s", (3,), "int")],
        data={"s": _ints(2, 3, 4)},
    ),  # fmt: skip
    # matrix products
    _binary("MatMul", (2, 3, 4), (4, 5)),
    _binary("MatMul", (4,), (4, 5)),
    _binary("MatMul", (2, 3, 4), (4,)),
    _binary("MatMul", (4,), (4,)),
    _binary("MatMul", (2, 1, 3, 4), (3, 4, 2)),
    *[
        Case(
            f"Gemm-tA{ta}-tB{tb}",
            [_node("Gemm", ["a", "b", "c"], transA=ta, transB=tb, alpha=0.7, beta=1.3)],
            [
                ("a", (4, 3) if ta else (3, 4), "x"),
                ("b", (5, 4) if tb else (4, 5), "x"),
                ("c", (5,), "x"),
            ],
        )
        for ta in (0, 1)
        for tb in (0, 1)
    ],  # fmt: skip
    Case("Gemm-no-C", [_node("Gemm", ["a", "b"])], [("a", (3, 4), "x"), ("b", (4, 2), "x")]),
    # reductions
    Case(
        "ReduceSum-axes-input",
        [_node("ReduceSum", ["a", "ax"], keepdims=0)],
        [("a", (2, 3, 4), "x"), ("ax", (2,), "int")],
        13,
        data={"ax": _ints(0, -1)},
    ),
    Case("ReduceSum-all", [_node("ReduceSum", ["a"])], [("a", (2, 3), "x")], 13),
    Case(
        "ReduceSum-noop",
        [_node("ReduceSum", ["a"], noop_with_empty_axes=1)],
        [("a", (2, 3), "x")],
        13,
    ),  # fmt: skip
    Case(
        "ReduceSum-opset11-attr", [_node("ReduceSum", ["a"], axes=[1])], [("a", (2, 3, 4), "x")], 11
    ),  # fmt: skip
    Case(
        "ReduceMean-opset18",
        [_node("ReduceMean", ["a", "ax"], keepdims=1)],
        [("a", (2, 3, 4), "x"), ("ax", (1,), "int")],
        18,
        data={"ax": _ints(1)},
    ),
    Case(
        "ReduceMean-opset13-attr",
        [_node("ReduceMean", ["a"], axes=[0, 2], keepdims=0)],
        [("a", (2, 3, 4), "x")],
        13,
    ),  # fmt: skip
    Case(
        "ReduceMean-symbolic",
        [_node("ReduceMean", ["a", "ax"], keepdims=0)],
        [("a", ("N", 5), "x"), ("ax", (1,), "int")],
        18,
        data={"ax": _ints(1)},
        feed_shapes={"a": (3, 5)},
    ),  # fmt: skip
    Case(
        "ReduceMax",
        [_node("ReduceMax", ["a", "ax"], keepdims=0)],
        [("a", (3, 4), "x"), ("ax", (1,), "int")],
        18,
        data={"ax": _ints(1)},
    ),
    Case(
        "ReduceMin-keepdims",
        [_node("ReduceMin", ["a"], axes=[0], keepdims=1)],
        [("a", (3, 4), "x")],
        13,
    ),  # fmt: skip
    # softmax
    Case("Softmax-13", [_node("Softmax", ["a"], axis=1)], [("a", (2, 3, 4), "x")], 13),
    Case("Softmax-11-coerced", [_node("Softmax", ["a"], axis=1)], [("a", (2, 3, 4), "x")], 11),
    Case("LogSoftmax", [_node("LogSoftmax", ["a"], axis=-1)], [("a", (2, 5), "x")], 13),
    # convolution and pooling
    Case(
        "Conv-pads-strides",
        [_node("Conv", ["a", "w", "b"], pads=[1, 0, 2, 1], strides=[2, 1])],
        [("a", (2, 3, 6, 5), "x"), ("w", (4, 3, 3, 2), "x"), ("b", (4,), "x")],
    ),
    Case(
        "Conv-dilations-floor",
        [_node("Conv", ["a", "w"], dilations=[2, 1], strides=[2, 3])],
        [("a", (1, 2, 8, 7), "x"), ("w", (3, 2, 2, 2), "x")],
    ),
    Case(
        "Conv-groups",
        [_node("Conv", ["a", "w"], group=2, pads=[1, 1, 1, 1])],
        [("a", (2, 4, 5, 5), "x"), ("w", (6, 2, 3, 3), "x")],
    ),
    Case(
        "Conv-same-upper",
        [_node("Conv", ["a", "w"], auto_pad="SAME_UPPER", strides=[2, 2])],
        [("a", (1, 2, 5, 6), "x"), ("w", (2, 2, 3, 3), "x")],
    ),
    Case(
        "Conv-1d",
        [_node("Conv", ["a", "w"], pads=[2, 1])],
        [("a", (2, 3, 7), "x"), ("w", (2, 3, 4), "x")],
    ),
    Case(
        "MaxPool",
        [_node("MaxPool", ["a"], kernel_shape=[2, 2], strides=[2, 2])],
        [("a", (2, 3, 4, 6), "x")],
    ),
    Case(
        "MaxPool-overlap-pads",
        [_node("MaxPool", ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        [("a", (1, 2, 5, 5), "x")],
    ),  # fmt: skip
    Case(
        "MaxPool-ceil",
        [_node("MaxPool", ["a"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
        [("a", (1, 2, 5, 5), "x")],
    ),  # fmt: skip
    Case(
        "AveragePool-exclude-pad",
        [_node("AveragePool", ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        [("a", (2, 2, 5, 6), "x")],
    ),  # fmt: skip
    Case(
        "AveragePool-include-pad",
        [_node("AveragePool", ["a"], kernel_shape=[2, 3], pads=[1, 0, 0, 1], count_include_pad=1)],
        [("a", (1, 2, 4, 5), "x")],
    ),  # fmt: skip
    Case(
        "AveragePool-ceil",
        [_node("AveragePool", ["a"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
        [("a", (1, 1, 5, 5), "x")],
    ),  # fmt: skip
    Case("GlobalAveragePool", [_node("GlobalAveragePool", ["a"])], [("a", (2, 3, 4, 5), "x")]),
    Case("GlobalMaxPool", [_node("GlobalMaxPool", ["a"])], [("a", (2, 3, 4, 5), "x")]),
    # normalization
    Case(
        "BatchNormalization",
        [_node("BatchNormalization", ["a", "s", "b", "m", "v"])],
        [
            ("a", (2, 3, 4, 2), "x"),
            ("s", (3,), "x"),
            ("b", (3,), "x"),
            ("m", (3,), "x"),
            ("v", (3,), "pos"),
        ],
        15,
    ),  # fmt: skip
    Case(
        "LayerNormalization-last",
        [_node("LayerNormalization", ["a", "s", "b"])],
        [("a", (2, 3, 5), "x"), ("s", (5,), "x"), ("b", (5,), "x")],
        17,
    ),  # fmt: skip
    Case(
        "LayerNormalization-axis1",
        [_node("LayerNormalization", ["a", "s"], axis=1)],
        [("a", (2, 3, 4), "x"), ("s", (3, 4), "x")],
        18,
    ),  # fmt: skip
    # data movement
    Case(
        "Reshape",
        [_node("Reshape", ["a", "s"])],
        [("a", (2, 3, 4), "x"), ("s", (2,), "int")],
        data={"s": _ints(4, -1)},
    ),  # fmt: skip
    Case("Flatten", [_node("Flatten", ["a"], axis=2)], [("a", (2, 3, 4, 2), "x")]),
    Case(
        "Squeeze",
        [_node("Squeeze", ["a", "ax"])],
        [("a", (2, 1, 4), "x"), ("ax", (1,), "int")],
        data={"ax": _ints(1)},
    ),  # fmt: skip
    Case("Unsqueeze-opset11", [_node("Unsqueeze", ["a"], axes=[0, 3])], [("a", (2, 3), "x")], 11),
    Case("Transpose", [_node("Transpose", ["a"], perm=[2, 0, 1])], [("a", (2, 3, 4), "x")]),
    Case("Transpose-default", [_node("Transpose", ["a"])], [("a", (2, 3, 4), "x")]),
    Case(
        "Concat",
        [_node("Concat", ["a", "b", "c"], axis=1)],
        [("a", (2, 1, 3), "x"), ("b", (2, 4, 3), "x"), ("c", (2, 2, 3), "x")],
    ),  # fmt: skip
    Case(
        "Concat-symbolic",
        [_node("Concat", ["a", "b"], axis=0)],
        [("a", ("N", 3), "x"), ("b", ("M", 3), "x")],
        feed_shapes={"a": (2, 3), "b": (3, 3)},
    ),
    Case(
        "Split-sizes-unused-output",
        [
            _node("Split", ["a", "sz"], ["s0", "s1", "s2"], axis=1),
            _node("Concat", ["s2", "s0"], axis=1),
        ],
        [("a", (2, 6), "x"), ("sz", (3,), "int")],
        13,
        data={"sz": _ints(1, 2, 3)},
    ),
    Case(
        "Split-num-outputs",
        [_node("Split", ["a"], ["s0", "s1"], axis=0, num_outputs=2), _node("Mul", ["s0", "s1"])],
        [("a", (4, 3), "x")],
        18,
    ),  # fmt: skip
    Case(
        "Slice-steps",
        [_node("Slice", ["a", "st", "en", "ax", "sp"])],
        [
            ("a", (5, 6, 4), "x"),
            ("st", (3,), "int"),
            ("en", (3,), "int"),
            ("ax", (3,), "int"),
            ("sp", (3,), "int"),
        ],
        data={
            "st": _ints(1, -1, 0),
            "en": _ints(4, 0, 99),
            "ax": _ints(0, 1, -1),
            "sp": _ints(1, -2, 3),
        },
    ),  # fmt: skip
    Case(
        "Slice-symbolic-tail",
        [_node("Slice", ["a", "st", "en", "ax"])],
        [("a", ("N", 4), "x"), ("st", (1,), "int"), ("en", (1,), "int"), ("ax", (1,), "int")],
        data={"st": _ints(1), "en": _ints(2**63 - 1), "ax": _ints(0)},
        feed_shapes={"a": (5, 4)},
    ),  # fmt: skip
    Case(
        "Pad",
        [_node("Pad", ["a", "p", "v"])],
        [("a", (2, 3), "x"), ("p", (4,), "int"), ("v", (), "const")],
        data={"p": _ints(1, 0, 2, 3), "v": np.float64(0.5)},
    ),  # fmt: skip
    Case(
        "Gather-embedding-repeats",
        [_node("Gather", ["a", "i"], axis=0)],
        [("a", (5, 3), "x"), ("i", (2, 3), "int")],
        data={"i": _ints(0, 4, 0, -1, 2, 4).reshape(2, 3)},
    ),
    Case(
        "Gather-axis1-scalar",
        [_node("Gather", ["a", "i"], axis=1)],
        [("a", (2, 4, 3), "x"), ("i", (), "int")],
        data={"i": np.array(2, dtype=np.int64)},
    ),
    # two-node chains: a cotangent summed over several readers
    Case(
        "fan-out", [_node("Mul", ["a", "a"], ["t"]), _node("Add", ["t", "a"])], [("a", (3, 2), "x")]
    ),  # fmt: skip
]


def _elem(dtype) -> int:
    return TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT


def _build(case: Case, dtype) -> onnx.ModelProto:
    graph_inputs, inits = [], []
    for name, shape, kind in case.inputs:
        if kind in ("x", "pos"):
            graph_inputs.append(helper.make_tensor_value_info(name, _elem(dtype), list(shape)))
        elif kind == "bool":
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.BOOL, list(shape)))
        elif kind == "int":
            inits.append(numpy_helper.from_array(case.data[name], name))
        else:
            inits.append(numpy_helper.from_array(np.asarray(case.data[name], dtype=dtype), name))
    nodes = []
    for op, ins, outs, attrs in case.nodes:
        attrs = dict(attrs)
        if op == "Cast":
            attrs["to"] = _elem(dtype)
        nodes.append(helper.make_node(op, ins, outs, **attrs))
    out = helper.make_tensor_value_info(case.output, _elem(dtype), None)
    graph = helper.make_graph(nodes, case.id, graph_inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _feeds(case: Case, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for name, shape, kind in case.inputs:
        shape = case.feed_shapes.get(name, shape)
        if kind == "x" and name in case.data:  # a differentiable input with chosen values
            feeds[name] = np.asarray(case.data[name], dtype=np.float64)
        elif kind == "x":
            feeds[name] = rng.standard_normal(shape)
        elif kind == "pos":
            feeds[name] = rng.uniform(0.5, 2.0, shape)
        elif kind == "bool":
            feeds[name] = rng.random(shape) < 0.5
    return feeds


def _numeric_vjp(model64, feeds, u, name):
    ref = _reference(model64)

    def loss(f):
        return float(np.sum(u * ref.run(None, f)[0]))

    x = feeds[name]
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape) if x.shape else [()]:
        plus, minus = dict(feeds), dict(feeds)
        plus[name], minus[name] = x.copy(), x.copy()
        plus[name][i] += EPS
        minus[name][i] -= EPS
        grad[i] = (loss(plus) - loss(minus)) / (2 * EPS)
    return grad


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vjp_matches_finite_differences(case):
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))  # stable across processes
    model32, model64 = _build(case, np.float32), _build(case, np.float64)
    graph, _ = onnx_io.import_model(model32)
    wrt = [n for n, _, k in case.inputs if k in ("x", "pos")]
    gg = build_vjp(graph, wrt)
    gg.graph.check()
    proto = onnx_io.to_proto(gg.graph)
    onnx.checker.check_model(proto)
    feeds = _feeds(case, rng)
    y64 = _reference(model64).run(None, feeds)[0]
    u = rng.standard_normal(np.shape(y64))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed32 = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in feeds.items()}
    feed32[gg.cotangent] = np.asarray(u, dtype=np.float32)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed32)))
    np.testing.assert_allclose(got[gg.output], y64, rtol=1e-4, atol=1e-5)
    for name in wrt:
        want = _numeric_vjp(model64, feeds, u, name)
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(
            got[gg.gradients[name]], want, rtol=2e-3, atol=2e-4 * scale, err_msg=name
        )


def test_every_op_of_the_issue_has_a_rule_and_a_case():
    required = {
        "MatMul", "Gemm", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
        "BatchNormalization", "LayerNormalization", "Relu", "Sigmoid", "Tanh", "Gelu", "Softmax",
        "Add", "Sub", "Mul", "Div", "Reshape", "Transpose", "Flatten", "Concat", "Split",
        "Slice", "Gather", "ReduceMean", "ReduceSum", "Erf", "Exp", "Log",
    }  # fmt: skip
    assert required <= set(supported_ops())
    tested = {op for case in CASES for op, *_ in case.nodes}
    assert set(supported_ops()) <= tested, set(supported_ops()) - tested


def test_unsupported_ops_are_all_named_before_anything_is_built():
    nodes = [helper.make_node("Cos", ["a"], ["c"]), helper.make_node("Sin", ["c"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    ir, _ = onnx_io.import_model(model)
    with pytest.raises(UnsupportedOpError) as info:
        build_vjp(ir)
    assert info.value.ops == ["Cos", "Sin"]
    message = str(info.value)
    assert "Cos (x1, e.g. 'c')" in message and "Sin (x1, e.g. 's')" in message
    assert "\n" not in message


def test_ops_off_the_gradient_path_need_no_rule():
    # Cos only sees the (runtime) length of x, an integer turned float: no gradient flows there,
    # so it needs no rule; Shape and Cast work on integers and block nothing either.
    nodes = [
        helper.make_node("Shape", ["a"], ["sh"]),
        helper.make_node("Cast", ["sh"], ["shf"], to=TensorProto.FLOAT),
        helper.make_node("Cos", ["shf"], ["cc"]),
        helper.make_node("Reshape", ["a", "sh"], ["r"]),
        helper.make_node("Mul", ["r", "cc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    gg = build_vjp(onnx_io.import_model(model)[0])
    assert "Cos" in {n.op for n in gg.graph.nodes()}  # still there: not folded away
    session = ort.InferenceSession(onnx_io.to_proto(gg.graph).SerializeToString())
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    u = np.array([1.0, -1.0, 2.0], dtype=np.float32)
    grad = session.run([gg.gradients["a"]], {"a": a, gg.cotangent: u})[0]
    np.testing.assert_allclose(grad, u * np.cos(3.0), rtol=1e-6)


def test_bad_names_and_integer_inputs_are_explained():
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["y"])]
    emb = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "emb")
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], initializer=[emb],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    ir, _ = onnx_io.import_model(model)
    with pytest.raises(AutodiffError.__mro__[1], match="only for floating-point"):
        build_vjp(ir, ["ids"])
    with pytest.raises(AutodiffError.__mro__[1], match="no input named 'nope'"):
        build_vjp(ir, ["nope"])
    with pytest.raises(AutodiffError.__mro__[1], match="no output named"):
        build_vjp(ir, output="zzz")


def test_maxpool_before_opset_16_is_refused_with_the_reason():
    node = helper.make_node("MaxPool", ["a"], ["y"], kernel_shape=[2, 2])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(AutodiffError, match="opset 16"):
        build_vjp(onnx_io.import_model(model)[0])
