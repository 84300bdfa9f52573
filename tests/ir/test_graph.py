"""The IR's core promises: hash-consing, immutability, SSA by construction, check(), transform."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from optimizer.ir import (
    REGISTRY,
    DType,
    Graph,
    IRCheckError,
    Node,
    TensorData,
    TensorType,
    check_graph,
    constant,
    graph_input,
    transform,
)

F32 = TensorType(DType.FLOAT, ("N", 4))


def add(a, b, t=F32):
    return Node.make("Add", [a, b], output_types=[t]).output


def test_structurally_equal_nodes_are_the_same_object():
    x = graph_input("x", F32)
    y = graph_input("y", F32)
    assert add(x, y) is add(x, y)
    assert add(x, y) is not add(y, x)  # commutativity is a rule, not structure
    assert Node.make("Relu", [add(x, y)], output_types=[F32]) is Node.make(
        "Relu", [add(x, y)], output_types=[F32]
    )


def test_attributes_are_part_of_identity():
    x = graph_input("x", F32)
    a = Node.make("Softmax", [x], {"axis": 1}, output_types=[F32])
    b = Node.make("Softmax", [x], {"axis": 0}, output_types=[F32])
    assert a is not b
    assert a is Node.make("Softmax", [x], {"axis": 1}, output_types=[F32])


def test_unique_nodes_are_never_merged():
    x = graph_input("x", F32)
    r1 = Node.make("RandomNormalLike", [x], output_types=[F32], unique=True)
    r2 = Node.make("RandomNormalLike", [x], output_types=[F32], unique=True)
    assert r1 is not r2


def test_constants_hash_by_content_and_load_lazily():
    calls = []

    def loader():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(2, 3)

    lazy = TensorData(DType.FLOAT, (2, 3), loader)
    assert calls == []
    eager = TensorData.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert constant(lazy) is constant(eager)  # equal content, one node
    assert calls  # the digest needed the data
    other = TensorData.from_array(np.arange(6, dtype=np.float32).reshape(3, 2))
    assert constant(other) is not constant(eager)  # same bytes, different shape


def test_constant_data_is_read_only():
    data = TensorData.from_array(np.ones(3, np.float32))
    with pytest.raises(ValueError):
        data.numpy()[0] = 5


def test_interning_does_not_keep_dead_nodes_alive():
    x = graph_input("x", F32)
    node = Node.make("Tanh", [x], output_types=[F32])
    serial = node.serial
    del node
    gc.collect()
    assert Node.make("Tanh", [x], output_types=[F32]).serial != serial


def test_a_dropped_graph_is_freed_without_the_cycle_collector():
    # Searches pause the cyclic collector: nodes and values must not form reference cycles.
    x = graph_input("x", F32)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        y = Node.make("Relu", [add(x, x)], output_types=[F32]).output
        upstream = weakref.ref(y.node.inputs[0].node)
        graph = Graph(inputs=(x,), outputs=(y,), output_names=("y",))
        assert graph.nodes() and upstream() is not None
        del graph, y
        assert upstream() is None
    finally:
        if was_enabled:
            gc.enable()


def test_a_node_gives_the_same_values_while_they_are_held():
    x = graph_input("x", F32)
    split = Node.make(
        "Split", [x], {"axis": 1, "num_outputs": 2},
        output_types=[TensorType(DType.FLOAT, ("N", 2))] * 2,
    )  # fmt: skip
    first, second = split.outputs
    assert split.outputs[0] is first and split.outputs[1] is second
    assert first.node is split and (first.index, second.index) == (0, 1)
    del first  # nothing holds it: the next access makes an equal one, the other one kept
    again = split.outputs
    assert again[1] is second and again[0].node is split
    assert again[0].type == TensorType(DType.FLOAT, ("N", 2)) and again[0].index == 0


def test_multi_output_nodes_and_topological_order():
    x = graph_input("x", TensorType(DType.FLOAT, (4, 6)))
    split = Node.make(
        "Split",
        [x],
        {"axis": 1, "num_outputs": 2},
        output_types=[TensorType(DType.FLOAT, (4, 3))] * 2,
    )
    a, b = split.outputs
    out = Node.make("Mul", [a, b], output_types=[TensorType(DType.FLOAT, (4, 3))]).output
    graph = Graph((x,), (out,), ("y",))
    order = graph.nodes()
    assert [n.op for n in order] == ["Split", "Mul"]
    assert graph.consumers()[a] == [out.node]
    graph.check()


def test_graph_contains_only_what_outputs_reach():
    x = graph_input("x", F32)
    used = Node.make("Relu", [x], output_types=[F32]).output
    Node.make("Sigmoid", [x], output_types=[F32])  # dead: no output reads it
    graph = Graph((x,), (used,), ("y",))
    assert [n.op for n in graph.nodes()] == ["Relu"]


def test_check_catches_wrong_output_types():
    x = graph_input("x", TensorType(DType.FLOAT, (2, 3)))
    w = constant(TensorData.from_array(np.ones((3, 5), np.float32)))
    wrong = Node.make("MatMul", [x, w], output_types=[TensorType(DType.FLOAT, (2, 7))]).output
    problems = check_graph(Graph((x,), (wrong,), ("y",)))
    assert problems and "MatMul" in problems[0]
    with pytest.raises(IRCheckError):
        Graph((x,), (wrong,), ("y",)).check()
    right = Node.make("MatMul", [x, w], output_types=[TensorType(DType.FLOAT, (2, 5))]).output
    assert check_graph(Graph((x,), (right,), ("y",))) == []


def test_check_catches_free_inputs_and_bad_names():
    x = graph_input("x", F32)
    z = graph_input("z", F32)
    out = add(x, z)
    problems = check_graph(Graph((x,), (out,), ("y",)))
    assert any("'z'" in p for p in problems)
    problems = check_graph(Graph((x, z), (out, out), ("y", "y")))
    assert any("unique" in p for p in problems)


def test_transform_rebuilds_and_merges():
    x = graph_input("x", F32)
    ident = Node.make("Identity", [x], output_types=[F32]).output
    a = Node.make("Relu", [ident], output_types=[F32]).output
    b = Node.make("Relu", [x], output_types=[F32]).output
    out = add(a, b)
    graph = Graph((x,), (out,), ("y",), value_names={a: "a", b: "b"})

    def drop_identity(node, inputs):
        return [inputs[0]] if node.op == "Identity" else None

    result = transform(graph, drop_identity, provenance="test-rule")
    ops = [n.op for n in result.nodes()]
    assert ops == ["Relu", "Add"]  # both Relus became one node
    (relu,) = [n for n in result.nodes() if n.op == "Relu"]
    assert result.outputs[0].node.inputs == (relu.output, relu.output)
    assert graph.nodes()[0].op == "Identity"  # the original graph is untouched
    result.check()


def test_registry_infers_standard_ops_through_onnx():
    import optimizer.onnx_io  # noqa: F401 - installs ONNX's schemas and shape inference

    x = graph_input("x", TensorType(DType.FLOAT, (2, 3, 8)))
    node = Node.make("ReduceLogSumExp", [x], {"axes": [2], "keepdims": 0}, output_types=[F32])
    assert REGISTRY.infer(node, 17) == [TensorType(DType.FLOAT, (2, 3))]
    assert REGISTRY.is_standard("", "Conv", 17)
    assert not REGISTRY.is_standard("", "NoSuchOp", 17)
