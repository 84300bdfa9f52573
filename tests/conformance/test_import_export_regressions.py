"""Regressions found next to the ONNX backend suite: constructs the backend cases do not reach
(captured outer values, legacy opsets, random control flow, sub-byte folding, aliased outputs).

Each model is run on onnxruntime before and after ``optimizer.optimize(check=False)``; the
result must pass ``onnx.checker`` and give the same outputs.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import optimizer
from optimizer import onnx_io

pytestmark = pytest.mark.conformance

X = np.arange(6, dtype=np.float32).reshape(2, 3)
x_info = h.make_tensor_value_info("x", T.FLOAT, [2, 3])
y_info = h.make_tensor_value_info("y", T.FLOAT, [2, 3])


def _model(nodes, inputs, outputs, inits=(), opset=17, ir=None):
    model = h.make_model(
        h.make_graph(nodes, "g", inputs, outputs, list(inits)),
        opset_imports=[h.make_opsetid("", opset)],
    )
    if ir is not None:
        model.ir_version = ir
    return model


def _run(model, feed):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), so, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feed)


def _same_after_optimize(model, feed) -> onnx.ModelProto:
    onnx.checker.check_model(model)
    graph, _ = onnx_io.import_model(model)
    graph.check()
    result = optimizer.optimize(model, check=False)
    onnx.checker.check_model(result)
    for ref, out in zip(_run(model, feed), _run(result, feed), strict=True):
        np.testing.assert_array_equal(out, ref)
    return result


def _branch(op, name, outer):
    node = h.make_node(op, [outer, "k"], [name])
    return h.make_graph([node], name, [], [h.make_tensor_value_info(name, T.FLOAT, [2, 3])])


def test_if_reading_a_bypassed_identity_and_a_folded_constant():
    """The Identity re-binding a captured name must come before the If (sorted graph)."""
    nodes = [
        h.make_node("Identity", ["x"], ["xi"]),
        h.make_node("Add", ["c", "c"], ["k"]),
        h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        h.make_node("Greater", ["s", "zero"], ["cond"]),
        h.make_node(
            "If",
            ["cond"],
            ["y"],
            then_branch=_branch("Add", "t", "xi"),
            else_branch=_branch("Sub", "e", "xi"),
        ),
    ]
    inits = [nh.from_array(np.ones((2, 3), np.float32), "c"), nh.from_array(np.float32(0), "zero")]
    _same_after_optimize(_model(nodes, [x_info], [y_info], inits), {"x": X})


def test_captured_name_that_is_also_an_output_is_bound_once():
    nodes = [
        h.make_node("Identity", ["x"], ["z"]),
        h.make_node(
            "If",
            ["c"],
            ["y"],
            then_branch=_branch("Add", "t", "z"),
            else_branch=_branch("Sub", "e", "z"),
        ),
    ]
    inputs = [x_info, h.make_tensor_value_info("c", T.BOOL, [])]
    outputs = [y_info, h.make_tensor_value_info("z", T.FLOAT, [2, 3])]
    inits = [nh.from_array(np.ones((2, 3), np.float32), "k")]
    _same_after_optimize(_model(nodes, inputs, outputs, inits), {"x": X, "c": np.array(False)})


def test_graph_input_that_is_also_an_output():
    nodes = [h.make_node("Identity", ["x"], ["y"])]
    outputs = [y_info, h.make_tensor_value_info("x", T.FLOAT, [2, 3])]
    _same_after_optimize(_model(nodes, [x_info], outputs), {"x": X})


def test_loop_body_reading_outer_values():
    body = h.make_graph(
        [
            h.make_node("Add", ["a_in", "xi"], ["a_out"]),
            h.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "body",
        [
            h.make_tensor_value_info("i", T.INT64, []),
            h.make_tensor_value_info("c_in", T.BOOL, []),
            h.make_tensor_value_info("a_in", T.FLOAT, [2, 3]),
        ],
        [
            h.make_tensor_value_info("c_out", T.BOOL, []),
            h.make_tensor_value_info("a_out", T.FLOAT, [2, 3]),
        ],
    )
    nodes = [
        h.make_node("Identity", ["x"], ["xi"]),
        h.make_node("Loop", ["n", "", "x"], ["y"], body=body),
    ]
    inits = [nh.from_array(np.int64(3), "n")]
    _same_after_optimize(_model(nodes, [x_info], [y_info], inits), {"x": X})


def _random_branch(name):
    node = h.make_node("RandomUniform", [], [name], shape=[2, 3])
    return h.make_graph([node], name, [], [h.make_tensor_value_info(name, T.FLOAT, [2, 3])])


def test_equal_control_flow_with_random_bodies_is_not_merged():
    ifs = [
        h.make_node(
            "If", ["c"], [out], then_branch=_random_branch("r"), else_branch=_random_branch("q")
        )
        for out in ("a", "b")
    ]
    nodes = [*ifs, h.make_node("Sub", ["a", "b"], ["y"])]
    graph, _ = onnx_io.import_model(
        _model(nodes, [h.make_tensor_value_info("c", T.BOOL, [])], [y_info])
    )
    assert sum(n.op == "If" for n in graph.nodes()) == 2


def test_training_dropout_is_neither_merged_nor_folded():
    inits = [nh.from_array(np.float32(0.5), "r"), nh.from_array(np.array(True), "tm")]
    nodes = [h.make_node("Dropout", ["x", "r", "tm"], [o]) for o in ("a", "b")]
    nodes.append(h.make_node("Sub", ["a", "b"], ["y"]))
    result = optimizer.optimize(_model(nodes, [x_info], [y_info], inits, opset=13), check=False)
    assert [n.op_type for n in result.graph.node].count("Dropout") == 2
    inits.append(nh.from_array(X, "cx"))
    folded = optimizer.optimize(
        _model([h.make_node("Dropout", ["cx", "r", "tm"], ["y"])], [], [y_info], inits, opset=13),
        check=False,
    )
    assert [n.op_type for n in folded.graph.node] == ["Dropout"]


def test_dropout_before_opset_7_defaults_to_training():
    model = _model(
        [h.make_node("Dropout", ["x"], ["y"], ratio=0.5)], [x_info], [y_info], opset=6, ir=3
    )
    assert [n.op_type for n in optimizer.optimize(model, check=False).graph.node] == ["Dropout"]
    model.graph.node[0].attribute.append(h.make_attribute("is_test", 1))
    assert [n.op_type for n in optimizer.optimize(model, check=False).graph.node] == ["Identity"]


@pytest.mark.parametrize(
    "node, inputs, out_shape, opset",
    [
        (
            h.make_node("Add", ["a", "b"], ["y"], broadcast=1, axis=1),
            [[2, 3, 4], [3]],
            [2, 3, 4],
            6,
        ),
        (h.make_node("Reshape", ["a"], ["y"], shape=[4, 6]), [[2, 3, 4]], [4, 6], 4),
        (h.make_node("Concat", ["a", "a"], ["y"]), [[2, 3]], [2, 6], 3),
        (h.make_node("Cast", ["a"], ["y"], to="DOUBLE"), [[2, 3]], [2, 3], 5),
        (h.make_node("Dropout", ["a"], ["y", "m"], is_test=1), [[2, 3]], [2, 3], 6),
        (h.make_node("Flatten", ["a"], ["y"], axis=-1), [[2, 3, 4]], [6, 4], 13),
    ],
)
def test_type_functions_of_older_opsets(node, inputs, out_shape, opset):
    """The IR checker compares the hand-written type functions with ONNX's inference."""
    names = ["a", "b"][: len(inputs)]
    infos = [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in zip(names, inputs, strict=True)]
    dtype = T.DOUBLE if node.op_type == "Cast" else T.FLOAT
    outputs = [h.make_tensor_value_info(o, dtype, out_shape) for o in node.output]
    graph, _ = onnx_io.import_model(_model([node], infos, outputs, opset=opset, ir=3))
    graph.check()


def test_constant_value_kinds_and_sparse_value():
    sparse = h.make_sparse_tensor(
        nh.from_array(np.array([5.0], np.float32), "v"),
        nh.from_array(np.array([1], np.int64), "i"),
        [3],
    )
    nodes = [
        h.make_node("Constant", [], ["a"], value_floats=[1.0, 2.0, 3.0]),
        h.make_node("Constant", [], ["sp"], sparse_value=sparse),
        h.make_node("Add", ["a", "sp"], ["y"]),
        h.make_node("Constant", [], ["s"], value_strings=["p", "ü"]),
    ]
    outputs = [
        h.make_tensor_value_info("y", T.FLOAT, [3]),
        h.make_tensor_value_info("s", T.STRING, [2]),
    ]
    result = _same_after_optimize(_model(nodes, [], outputs), {})
    assert not result.graph.node  # everything folded; the outputs are initializers


@pytest.mark.parametrize("to", [T.INT4, T.UINT4, T.FLOAT8E4M3FN, T.BFLOAT16])
def test_folding_results_numpy_lacks(to):
    """Folded values of int4/float8/bfloat16 come back exactly (float8 was read as its bits)."""
    inits = [nh.from_array(np.array([1.3, 2.7, -9.1, 0.5], np.float32), "c")]
    nodes = [
        h.make_node("Cast", ["c"], ["q"], to=to),
        h.make_node("Cast", ["q"], ["y"], to=T.FLOAT),
    ]
    nodes.append(h.make_node("Add", ["y", "x"], ["z"]))
    model = _model(
        nodes,
        [h.make_tensor_value_info("x", T.FLOAT, [4])],
        [h.make_tensor_value_info("z", T.FLOAT, [4])],
        inits,
        opset=21,
    )
    result = _same_after_optimize(model, {"x": np.zeros(4, np.float32)})
    assert [n.op_type for n in result.graph.node] == ["Add"]


def test_int4_constant_output_is_folded():
    inits = [nh.from_array(np.array([1.3, 2.7, -6.2], np.float32), "c")]
    nodes = [h.make_node("Cast", ["c"], ["y"], to=T.INT4)]
    model = _model(nodes, [], [h.make_tensor_value_info("y", T.INT4, [3])], inits, opset=21)
    result = optimizer.optimize(model, check=False)
    onnx.checker.check_model(result)
    assert not result.graph.node
    (tensor,) = result.graph.initializer
    np.testing.assert_array_equal(nh.to_array(tensor), np.array([1, 3, -6], dtype=ml_dtypes.int4))
