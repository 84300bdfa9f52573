"""Applying matches: types are kept, provenance is recorded, names survive, nothing that must
stay is dropped."""

from __future__ import annotations

import numpy as np
from rewrite_helpers import example_rules, ir_const, ir_graph, ir_input, ir_op, rule

from optimizer.ir import DType, Node, TensorType
from optimizer.rewrite.apply import apply_match, replacement, replaces_type
from optimizer.rewrite.match import find_matches


def test_replaces_type():
    f = DType.FLOAT
    assert replaces_type(TensorType(f, (2, 3)), TensorType(f, (2, 3)))
    assert replaces_type(TensorType(f, ("N", 3)), TensorType(f, ("N", 3)))
    assert replaces_type(TensorType(f, (2, 3)), TensorType(f, (2, None)))  # unknown dim: fine
    assert replaces_type(TensorType(f, None), TensorType(f, (2,)))
    assert not replaces_type(TensorType(f, (2, 3)), TensorType(f, (3, 3)))  # static dim differs
    assert not replaces_type(TensorType(f, (2, 3)), TensorType(f, (1, 2, 3)))  # rank differs
    assert not replaces_type(TensorType(f, (2, 3)), TensorType(f, None))  # rank lost
    assert not replaces_type(TensorType(f, (2,)), TensorType(DType.DOUBLE, (2,)))


def test_apply_keeps_types_names_and_records_provenance():
    merge = example_rules()["merge-matmuls-sharing-input"]
    x = ir_input("x", ("N", 4))
    w1 = ir_const(np.arange(8, dtype=np.float32).reshape(4, 2))
    w2 = ir_const(np.arange(12, dtype=np.float32).reshape(4, 3))
    a, b = ir_op("MatMul", x, w1), ir_op("MatMul", x, w2)
    graph = ir_graph([x], [ir_op("Relu", a), b], names=["ra", "b"])
    match = find_matches(graph, merge)[0]
    result = apply_match(graph, match)
    assert result is not None
    result.check()
    assert result.output_names == ("ra", "b")
    assert [v.type for v in result.outputs] == [v.type for v in graph.outputs]
    ops = sorted(n.op for n in result.nodes())
    assert ops == ["Concat", "MatMul", "Relu", "Split"]
    for node in result.nodes():
        meta = result.node_meta.get(node)
        if node.op == "Relu":
            assert meta is None  # rebuilt over the new input, not made by the rule
        else:
            assert meta.provenance == "merge-matmuls-sharing-input"
    assert graph.nodes() != result.nodes()  # the input graph is untouched
    assert {n.op for n in graph.nodes()} == {"MatMul", "Relu"}


def test_graph_output_replaced_by_an_input_keeps_its_name():
    x = ir_input("x", (3,))
    y = ir_op("Mul", x, ir_const(np.ones(3, np.float32)))
    graph = ir_graph([x], [y], names=["y"])
    (match,) = find_matches(graph, example_rules()["mul-by-one"])
    result = apply_match(graph, match)
    result.check()
    assert result.outputs == (x,) and result.output_names == ("y",)


def test_no_application_across_a_shape_change():
    # Adding zeros of a bigger shape broadcasts x: replacing the sum by x would change it.
    x = ir_input("x", (4,))
    wide = ir_op("Add", x, ir_const(np.zeros((3, 4), np.float32)))
    same = ir_op("Add", x, ir_const(np.zeros((4,), np.float32)))
    graph = ir_graph([x], [wide, same])
    matches = find_matches(graph, example_rules()["add-zero"])
    assert [m.roots[0] for m in matches] == [wide, same]
    assert replacement(matches[0]) is None and apply_match(graph, matches[0]) is None
    result = apply_match(graph, matches[1])
    result.check()
    assert result.outputs == (wide, x)


def test_no_application_across_a_dtype_change():
    r = rule("rule cast-away:  # c\n    match: Cast(x, to=t)\n    rewrite: x")
    x = ir_input("x", (2,))
    graph = ir_graph([x], [ir_op("Cast", x, to=int(DType.DOUBLE)), ir_op("Cast", x, to=1)])
    wrong, right = find_matches(graph, r)
    assert apply_match(graph, wrong) is None
    assert apply_match(graph, right).outputs == (graph.outputs[0], x)


def test_rewrite_that_cannot_be_built_is_skipped():
    r = rule("rule bad-dim:  # c\n    match: Relu(x)\n    rewrite: Reshape(x, ints(dim(x, 5)))")
    x = ir_input("x", (2,))
    graph = ir_graph([x], [ir_op("Relu", x)])
    (match,) = find_matches(graph, r)
    assert replacement(match) is None and apply_match(graph, match) is None


def test_absent_attributes_stay_absent():
    r = rule(
        "rule conv-relu-swap:  # c\n    match: Conv(x, w, pads=p, strides=s, group=g)\n"
        "    rewrite: Conv(x, w, pads=p, strides=s, group=g)"
    )
    x, w = ir_input("x", (1, 2, 5, 5)), ir_const(np.ones((3, 2, 3, 3), np.float32))
    conv = ir_op("Conv", x, w, strides=[2, 2])
    (match,) = find_matches(ir_graph([x], [conv]), r)
    assert match.attrs == {"p": None, "s": (2, 2), "g": 1}
    (value,) = replacement(match)
    assert dict(value.node.attrs).keys() == {"strides", "group"}
    assert value.type == conv.type


def test_conv_batchnorm_fold_builds_constant_subgraph():
    fold = example_rules()["fold-conv-batchnorm"]
    x = ir_input("x", ("N", 2, 5, 5))
    w = ir_const(np.ones((3, 2, 3, 3), np.float32))
    stats = [ir_const(np.full(3, v, np.float32)) for v in (1.5, 0.1, 0.2, 2.0)]
    conv = ir_op("Conv", x, w, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    bn = ir_op("BatchNormalization", conv, *stats, epsilon=1e-3)
    graph = ir_graph([x], [bn])
    (match,) = find_matches(graph, fold)
    assert match.attrs["eps"] == np.float32(1e-3) and match.attrs["d"] is None
    result = apply_match(graph, match)
    result.check()
    (new_conv,) = [n for n in result.nodes() if n.op == "Conv"]
    assert len(new_conv.inputs) == 3 and new_conv.output.type == bn.type
    assert dict(new_conv.attrs).keys() == {"auto_pad", "group", "kernel_shape", "pads"}
    assert {result.node_meta[n].provenance for n in result.nodes()} == {"fold-conv-batchnorm"}


def test_opaque_nodes_are_never_dropped():
    # A deliberately wrong rule that forgets its left operand: applying it would drop the
    # custom op that computes that operand, which must never happen.
    r = rule("rule forget-left:  # c\n    match: Mul(x, y)\n    rewrite: y")
    x, y = ir_input("x", (3,)), ir_input("y", (3,))
    custom = Node.make("MyOp", [x], domain="custom.ops", output_types=[x.type], unique=True)
    graph = ir_graph([x, y], [ir_op("Mul", custom.outputs[0], y)])
    drops, keeps = find_matches(graph, r)  # Mul is commutative: both operand orders match
    assert drops.tensors["y"] is y and apply_match(graph, drops) is None
    assert keeps.tensors["y"] is custom.outputs[0]
    assert apply_match(graph, keeps).outputs == custom.outputs
    plain = ir_graph([x, y], [ir_op("Mul", ir_op("Relu", x), y)])
    assert apply_match(plain, find_matches(plain, r)[0]).outputs == (y,)


def test_castlike_becomes_cast_with_dtype_code():
    r = rule(
        "rule castlike-to-cast:  # c\n    match: CastLike(x, y)\n"
        "    rewrite: Cast(x, to=dtype_code(y))"
    )
    x, y = ir_input("x", (2,), DType.INT64), ir_input("y", (3,), DType.DOUBLE)
    graph = ir_graph([x, y], [ir_op("CastLike", x, y)])
    (match,) = find_matches(graph, r)
    result = apply_match(graph, match)
    result.check()
    (cast,) = result.nodes()
    assert cast.op == "Cast" and cast.attr("to") == int(DType.DOUBLE)
    assert cast.output.type == TensorType(DType.DOUBLE, (2,))


def test_rewrites_never_emit_ops_the_models_opset_lacks():
    from dataclasses import replace

    from optimizer.ir import ModelMeta

    gelu = rule("rule to-gelu:  # c\n    match: Mul(x, Erf(x))\n    rewrite: Gelu(x)")
    x = ir_input("x", (4,))
    graph = ir_graph([x], [ir_op("Mul", x, ir_op("Erf", x))])
    (match,) = find_matches(graph, gelu)
    at = {v: replace(graph, meta=ModelMeta(opset_imports=(("", v),))) for v in (17, 20)}
    assert apply_match(at[17], match) is None  # Gelu exists from opset 20
    assert [n.op for n in apply_match(at[20], match).nodes()] == ["Gelu"]
    # Split takes its sizes as an input from opset 13 only
    merge = example_rules()["merge-matmuls-sharing-input"]
    y = ir_input("y", ("N", 4))
    w = [ir_const(np.ones((4, k), np.float32)) for k in (2, 3)]
    two = ir_graph([y], [ir_op("MatMul", y, w[0]), ir_op("MatMul", y, w[1])])
    first = find_matches(two, merge)[0]
    old = replace(two, meta=ModelMeta(opset_imports=(("", 11),)))
    assert apply_match(old, first) is None
    assert apply_match(two, first) is not None


def test_a_split_whose_last_output_no_one_reads_keeps_all_its_outputs():
    """``a, _ = Split(...)``: the unread ``_`` still counts, so the Split is built with as many
    outputs as its split sizes (one output fewer would be an invalid node)."""
    first_half = rule(
        """
rule first-half:  # the first half of x along axis 0, as a Split (test only)
    match: Slice(x, s, e, ax)
    where: is_const(s) and is_const(e) and is_const(ax)
    rewrite:
        out, _ = Split(x, ints(2, 2), axis=0)
"""
    )
    x = ir_input("x", (4, 3))
    sliced = ir_op("Slice", x, ir_const(np.array([0])), ir_const(np.array([2])),
                   ir_const(np.array([0])))  # fmt: skip
    graph = ir_graph([x], [sliced])
    (match,) = find_matches(graph, first_half)
    result = apply_match(graph, match)
    assert result is not None
    result.check()
    (split,) = [n for n in result.nodes() if n.op == "Split"]
    assert len(split.outputs) == 2
    assert result.outputs[0] is split.outputs[0]
