"""ONNX import/export: what a round trip must preserve, and what the importer must refuse."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import optimizer
from optimizer import onnx_io
from optimizer.errors import ModelLoadError, UnsupportedModelError


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _roundtrip(model: onnx.ModelProto) -> onnx.ModelProto:
    graph, _ = onnx_io.import_model(model)
    graph.check()
    result = onnx_io.to_proto(graph)
    onnx.checker.check_model(result)
    return result


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def test_names_metadata_doc_strings_value_info_and_opsets_survive():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["hidden"], name="proj", doc_string="projection"),
        helper.make_node("Relu", ["hidden"], ["y"], name="act"),
    ]
    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    graph = helper.make_graph(
        nodes, "net", [_vi("x", ["batch", 4])], [_vi("y", ["batch", 2])], [w],
        doc_string="graph doc", value_info=[_vi("hidden", ["batch", 2])],
    )  # fmt: skip
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("com.example", 2)],
        producer_name="unit-test",
        doc_string="model doc",
    )
    model.model_version = 7
    helper.set_model_props(model, {"author": "me", "licence": "MIT"})
    result = _roundtrip(model)
    assert [n.name for n in result.graph.node] == ["proj", "act"]
    assert result.graph.node[0].doc_string == "projection"
    assert [n.output[0] for n in result.graph.node] == ["hidden", "y"]
    assert [v.name for v in result.graph.value_info] == ["hidden"]
    assert result.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {(o.domain, o.version) for o in result.opset_import} == {("", 15), ("com.example", 2)}
    assert (result.producer_name, result.doc_string, result.model_version) == (
        "unit-test",
        "model doc",
        7,
    )
    assert {p.key: p.value for p in result.metadata_props} == {"author": "me", "licence": "MIT"}
    assert result.graph.doc_string == "graph doc" and result.graph.name == "net"


def test_ir3_initializers_listed_as_inputs_are_constants():
    w = numpy_helper.from_array(np.full((3,), 2.0, np.float32), "w")
    k = numpy_helper.from_array(np.full((3,), 3.0, np.float32), "k")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["w", "k"], ["wk"]), helper.make_node("Add", ["x", "wk"], ["y"])],
        "ir3", [_vi("x", [3]), _vi("w", [3]), _vi("k", [3])], [_vi("y", [3])], [w, k],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    optimized = optimizer.optimize(model)
    assert [n.op_type for n in optimized.graph.node] == ["Add"]  # Mul of two weights folded
    assert optimized.ir_version == 3
    inputs = {i.name for i in optimized.graph.input}
    assert {t.name for t in optimized.graph.initializer} <= inputs  # IR 3 still requires this
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_allclose(_run(optimized, {"x": x})[0], x + 6)


def test_overridable_initializers_are_not_folded():
    w = numpy_helper.from_array(np.full((3,), 2.0, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["w", "w"], ["ww"]), helper.make_node("Add", ["x", "ww"], ["y"])],
        "ir8", [_vi("x", [3]), _vi("w", [3])], [_vi("y", [3])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    optimized = optimizer.optimize(model)
    assert [n.op_type for n in optimized.graph.node] == ["Mul", "Add"]
    x = np.zeros(3, np.float32)
    override = np.full(3, 5.0, np.float32)
    np.testing.assert_allclose(_run(optimized, {"x": x, "w": override})[0], override * override)


def test_constant_nodes_and_constant_of_shape_become_weights():
    nodes = [
        helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Constant", [], ["shape"], value_ints=[3]),
        helper.make_node(
            "ConstantOfShape", ["shape"], ["ones"],
            value=numpy_helper.from_array(np.array([1.0], np.float32)),
        ),
        helper.make_node("Add", ["c", "ones"], ["c1"]),
        helper.make_node("Mul", ["x", "c1"], ["y"]),
    ]  # fmt: skip
    graph = helper.make_graph(nodes, "consts", [_vi("x", [3])], [_vi("y", [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    optimized = optimizer.optimize(model)
    assert [n.op_type for n in optimized.graph.node] == ["Mul"]
    (weight,) = optimized.graph.initializer
    np.testing.assert_array_equal(numpy_helper.to_array(weight), [2.0, 3.0, 4.0])


def test_random_ops_are_neither_merged_nor_folded():
    nodes = [
        helper.make_node("RandomNormal", [], ["r1"], shape=[4], seed=1.0),
        helper.make_node("RandomNormal", [], ["r2"], shape=[4], seed=1.0),
        helper.make_node("Sub", ["r1", "r2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "rand", [], [_vi("y", [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = onnx_io.to_proto(onnx_io.import_model(model)[0])
    assert [n.op_type for n in result.graph.node].count("RandomNormal") == 2


def test_identical_deterministic_nodes_are_merged_and_dead_nodes_dropped():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["x"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
        helper.make_node("Sigmoid", ["x"], ["dead"]),
    ]
    graph = helper.make_graph(nodes, "cse", [_vi("x", [2])], [_vi("y", [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ir_graph, stats = onnx_io.import_model(model)
    assert (stats.onnx_nodes, stats.ir_nodes) == (4, 2)
    x = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_allclose(_run(onnx_io.to_proto(ir_graph), {"x": x})[0], [0.0, 4.0])


def test_control_flow_bodies_keep_their_captured_outer_values():
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["t"])], "then", [], [_vi("t", [3])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "bias"], ["e"])], "else", [], [_vi("e", [3])]
    )
    nodes = [
        helper.make_node("Identity", ["b0"], ["bias"]),  # eliminated: 'bias' must stay bound
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    b0 = numpy_helper.from_array(np.full(3, 2.0, np.float32), "b0")
    graph = helper.make_graph(
        nodes, "cf", [_vi("x", [3]), _vi("c", [], TensorProto.BOOL)], [_vi("y", [3])], [b0]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    optimized = optimizer.optimize(model)
    assert [n.op_type for n in optimized.graph.node] == ["If"]
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_allclose(_run(optimized, {"x": x, "c": np.array(True)})[0], x + 2)
    np.testing.assert_allclose(_run(optimized, {"x": x, "c": np.array(False)})[0], x * 2)


def test_omitted_optional_outputs_stay_omitted():
    # Before opset 14, BatchNormalization's optional outputs switch on training mode.
    params = [numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("s", "b", "m", "v")]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    graph = helper.make_graph([node], "bn", [_vi("x", [1, 2, 3])], [_vi("y", [1, 2, 3])], params)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    result = _roundtrip(model)
    assert list(result.graph.node[0].output) == ["y"]


def test_outputs_that_are_inputs_or_repeated_get_identities():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y1"]), helper.make_node("Identity", ["x"], ["y2"])],
        "passthrough", [_vi("x", [2])], [_vi("y1", [2]), _vi("y2", [2])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    optimized = optimizer.optimize(model)
    x = np.array([1.0, 2.0], np.float32)
    y1, y2 = _run(optimized, {"x": x})
    np.testing.assert_array_equal(y1, x)
    np.testing.assert_array_equal(y2, x)


def test_optimize_never_mutates_its_argument():
    from optimizer.examples import example_model

    model = example_model()
    before = model.SerializeToString()
    optimizer.optimize(model)
    assert model.SerializeToString() == before


def test_unknown_standard_op_is_refused_and_custom_ops_are_kept():
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"])], "bad", [_vi("x", [2])], [_vi("y", [2])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match="Frobnicate"):
        onnx_io.import_model(model)
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
        "custom", [_vi("x", [2])], [_vi("y", [2])],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    result = _roundtrip(model)
    assert result.graph.node[0].domain == "com.example"


def test_undefined_input_is_a_load_error():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["y"])], "bad", [_vi("x", [2])], [_vi("y", [2])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match="nowhere"):
        onnx_io.import_model(model)


def test_unsorted_nodes_are_sorted():
    nodes = [helper.make_node("Relu", ["a"], ["y"]), helper.make_node("Neg", ["x"], ["a"])]
    graph = helper.make_graph(nodes, "unsorted", [_vi("x", [2])], [_vi("y", [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = _roundtrip(model)
    assert [n.op_type for n in result.graph.node] == ["Neg", "Relu"]


def _x_plus(nodes, initializers=(), shape=(4,)) -> onnx.ModelProto:
    """x: float[shape] -> NODES -> y: float[shape] (the nodes compute y from x)."""
    graph = helper.make_graph(
        nodes, "g", [_vi("x", list(shape))], [_vi("y", list(shape))], list(initializers)
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("attrs", "dtype", "shape"),
    [
        ({"value_float": 2.5}, np.float32, ()),
        ({"value_floats": [1.0, 2.0]}, np.float32, (2,)),
        ({"value_int": 3}, np.int64, ()),
        ({"value_ints": [1, 2, 3]}, np.int64, (3,)),
        ({"value_string": "a"}, object, ()),
        ({"value_strings": ["a", "b"]}, object, (2,)),
    ],
)
def test_constant_attributes_are_read_without_an_evaluator(attrs, dtype, shape):
    nodes = [
        helper.make_node("Constant", [], ["c"], **attrs),
        helper.make_node("Relu", ["x"], ["y"]),
    ]
    model = _x_plus(nodes)
    model.graph.output.append(helper.make_tensor_value_info("c", TensorProto.UNDEFINED, None))
    graph, _ = onnx_io.import_model(model)
    graph.check()
    value = graph.outputs[1].constant.numpy()
    assert value.dtype == dtype and value.shape == shape
    want = next(iter(attrs.values()))
    assert value.tolist() == (want if not isinstance(want, float) else pytest.approx(want))


@pytest.mark.parametrize(
    ("dims", "values", "indices", "needle"),
    [
        ([4], [1.0], [4], "do not fit"),
        ([4], [1.0], [-1], "do not fit"),
        ([2, 2], [1.0, 2.0], [[0, 0]], "do not fit"),
        ([4], [1.0, 2.0], [0], "do not fit"),
    ],
)
def test_malformed_sparse_constant_is_a_load_error(dims, values, indices, needle):
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array(values, np.float32), "v"),
        numpy_helper.from_array(np.array(indices, np.int64), "i"),
        dims,
    )
    nodes = [
        helper.make_node("Constant", [], ["c"], sparse_value=sparse),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    with pytest.raises(ModelLoadError, match=needle):
        onnx_io.import_model(_x_plus(nodes, shape=dims))


@pytest.mark.parametrize(
    ("offset", "length", "needle"),
    [(0, 8, "holds 8 bytes"), (0, 64, "past end"), (8, 16, "past end"), ("x", 16, "integer")],
)
def test_external_data_must_hold_exactly_the_tensor(tmp_path, offset, length, needle):
    (tmp_path / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    weight = TensorProto()
    weight.name, weight.data_type = "w", TensorProto.FLOAT
    weight.dims.append(4)
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", offset), ("length", length)):
        entry = weight.external_data.add()
        entry.key, entry.value = key, str(value)
    onnx.save(_x_plus([helper.make_node("Add", ["x", "w"], ["y"])], [weight]), tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match=needle) as caught:
        onnx_io.load(tmp_path / "m.onnx")
    assert "'w'" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ([-2], "invalid Reshape target"),
        ([-1, -1], "invalid Reshape target"),
        ([3], "cannot reshape"),
    ],
)
def test_impossible_reshape_target_is_a_load_error(target, needle):
    target_tensor = numpy_helper.from_array(np.array(target, np.int64), "s")
    model = _x_plus([helper.make_node("Reshape", ["x", "s"], ["y"])], [target_tensor])
    model.graph.output[0].type.tensor_type.ClearField("shape")
    with pytest.raises(ModelLoadError, match=needle):
        onnx_io.import_model(model)


def test_string_tensor_with_invalid_utf8_is_a_load_error():
    tensor = TensorProto()
    tensor.name, tensor.data_type = "s", TensorProto.STRING
    tensor.dims.append(1)
    tensor.string_data.append(b"\xff")
    model = _x_plus([helper.make_node("Relu", ["x"], ["y"])], [tensor])
    model.graph.output.append(helper.make_tensor_value_info("s", TensorProto.STRING, [1]))
    with pytest.raises(ModelLoadError, match="UTF-8"):
        onnx_io.import_model(model)


@pytest.mark.slow
def test_models_over_2gb_load_and_save(tmp_path):
    """A 2.4 GB weight (a sparse file of zeros: no disk needed to create it) streams through."""
    count = 600 * 1024 * 1024 // 4 * 4  # float32 elements: 2.4 GB
    weight = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[count])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(count * 4))):
        weight.external_data.add(key=key, value=value)
    with open(tmp_path / "w.bin", "wb") as handle:
        handle.truncate(count * 4)
    nodes = [
        helper.make_node("ReduceSum", ["w"], ["s"], keepdims=0),
        helper.make_node("Add", ["x", "s"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "big", [_vi("x", [])], [_vi("y", [])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, tmp_path / "big.onnx")
    out = tmp_path / "out" / "big.opt.onnx"
    out.parent.mkdir()
    report = optimizer.optimize_file(tmp_path / "big.onnx", out, check=False, fold_size_limit=16)
    assert os.path.getsize(out) < 1 << 20  # weights went to the external file
    assert os.path.getsize(str(out) + ".data") >= count * 4
    reloaded, _ = onnx_io.load(out)
    (w,) = [v for v in reloaded.constants() if v.constant.size == count]
    assert not w.constant.is_loaded  # still lazy after the round trip
    assert report.after.parameters == count
