"""Matching rule patterns against IR graphs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from rewrite_helpers import (
    example_rules,
    imported,
    init,
    ir_const,
    ir_graph,
    ir_input,
    ir_op,
    model,
    rule,
    tensor,
)

from optimizer.ir import REGISTRY, Node
from optimizer.rewrite.match import MatchIndex, find_matches


def rules():
    return example_rules()


def test_literal_matches_filled_constants_only():
    x = ir_input("x", (2, 3))
    ones = ir_op("Mul", x, ir_const(np.ones((3,), np.float32)))
    twos = ir_op("Mul", x, ir_const(np.full((3,), 2, np.float32)))
    mixed = ir_op("Mul", x, ir_const(np.array([1, 2, 1], np.float32)))
    graph = ir_graph([x], [ones, twos, mixed])
    matches = find_matches(graph, rules()["mul-by-one"])
    assert [m.roots for m in matches] == [(ones,)]
    assert matches[0].tensors == {"x": x}
    assert matches[0].nodes == frozenset({ones.node})


def test_commutative_ops_match_both_orders():
    x = ir_input("x", (2, 3))
    left = ir_op("Mul", ir_const(np.ones((1,), np.float32)), x)
    right = ir_op("Add", x, ir_const(np.zeros((1,), np.float32)))
    graph = ir_graph([x], [left, right])
    assert [m.tensors["x"] for m in find_matches(graph, rules()["mul-by-one"])] == [x]
    assert [m.tensors["x"] for m in find_matches(graph, rules()["add-zero"])] == [x]
    # Sub is not commutative: 0 - x is not x
    sub = rule("rule sub-zero:  # x - 0 = x\n    match: Sub(x, 0)\n    rewrite: x")
    neg = ir_op("Sub", ir_const(np.zeros((1,), np.float32)), x)
    assert find_matches(ir_graph([x], [neg]), sub) == []


def test_commutative_match_tries_every_order_of_a_variadic_op():
    x, y = ir_input("x", (3,)), ir_input("y", (3,))
    total = ir_op("Sum", x, ir_op("Relu", y), ir_const(np.zeros((3,), np.float32)))
    r = rule("rule sum-relu:  # c\n    match: Sum(Relu(a), b, 0)\n    rewrite: Add(Relu(a), b)")
    (m,) = find_matches(ir_graph([x, y], [total]), r)
    assert m.tensors == {"a": y, "b": x}


def test_repeated_variables_bind_the_same_value():
    r = rule(
        "rule double:  # x + x = 2x\n    match: Add(x, x)\n    rewrite: Mul(x, scalar(2, like=x))"
    )
    x, y = ir_input("x", (4,)), ir_input("y", (4,))
    same, other = ir_op("Add", x, x), ir_op("Add", x, y)
    # hash-consing: Relu(x) built twice is one value, so Add(Relu(x), Relu(x)) matches
    twice = ir_op("Add", ir_op("Relu", x), ir_op("Relu", x))
    graph = ir_graph([x, y], [same, other, twice])
    assert [m.roots[0] for m in find_matches(graph, r)] == [same, twice]


def test_attribute_variables_and_where_clause():
    cancel = rules()["transposes-cancel"]
    x = ir_input("x", (2, 3, 4))
    back = ir_op("Transpose", ir_op("Transpose", x, perm=[1, 2, 0]), perm=[2, 0, 1])
    other = ir_op("Transpose", ir_op("Transpose", x, perm=[1, 0, 2]), perm=[0, 2, 1])
    graph = ir_graph([x], [back, other])
    (m,) = find_matches(graph, cancel)
    assert m.roots == (back,)
    assert m.attrs == {"p": (1, 2, 0), "q": (2, 0, 1)}
    assert len(m.nodes) == 2
    # A repeated attribute variable must bind equal values.
    same = rule(
        "rule same-perm:  # c\n    match: Transpose(Transpose(x, perm=p), perm=p)\n"
        "    rewrite: Transpose(x, perm=compose(p, p))"
    )
    twice = ir_op("Transpose", ir_op("Transpose", x, perm=[1, 0, 2]), perm=[1, 0, 2])
    assert [m.roots[0] for m in find_matches(ir_graph([x], [back, twice]), same)] == [twice]


def test_unmentioned_attributes_must_be_default():
    r = rule("rule leaky:  # c\n    match: LeakyRelu(x)\n    rewrite: Relu(x)")
    x = ir_input("x", (4,))
    plain = ir_op("LeakyRelu", x)
    explicit = ir_op("LeakyRelu", x, alpha=0.01)  # the default, written out (float32 rounding)
    other = ir_op("LeakyRelu", x, alpha=0.2)
    graph = ir_graph([x], [plain, explicit, other])
    assert {m.roots[0] for m in find_matches(graph, r)} == {plain, explicit}


def test_attribute_literals_compare_with_defaults():
    r = rule(
        "rule gemm:  # c\n    match: Gemm(a, b, transA=0, transB=1)\n    rewrite: MatMul(a, b)"
    )
    a, b = ir_input("a", (2, 3)), ir_input("b", (4, 3))
    implicit = ir_op("Gemm", a, b, transB=1)  # transA omitted: default 0
    explicit = ir_op("Gemm", a, b, transA=0, transB=1)
    wrong = ir_op("Gemm", ir_input("c", (3, 2)), b, transA=1, transB=1)
    graph = ir_graph([a, b, ir_input("c", (3, 2))], [implicit, explicit, wrong])
    assert {m.roots[0] for m in find_matches(graph, r)} == {implicit, explicit}


def test_attribute_variable_binds_default_or_none():
    assert REGISTRY.default_of("", "Conv", 18, "group") == 1
    assert REGISTRY.default_of("", "Conv", 18, "pads") is None
    r = rule(
        "rule conv-attrs:  # c\n    match: Conv(x, w, group=g, pads=p)\n"
        "    rewrite: Conv(x, w, group=g, pads=p)"
    )
    x, w = ir_input("x", (1, 2, 5, 5)), ir_const(np.ones((3, 2, 3, 3), np.float32))
    conv = ir_op("Conv", x, w)
    (m,) = find_matches(ir_graph([x], [conv]), r)
    assert m.attrs == {"g": 1, "p": None}


def test_number_of_inputs_and_omitted_optional_inputs():
    x = ir_input("x", (4,))
    hi = ir_const(np.array(6, np.float32))
    clip_hi = ir_op("Clip", x, None, hi)  # min omitted in the middle
    clip_plain = ir_op("Clip", x)
    graph = ir_graph([x], [clip_hi, clip_plain])
    wild = rule("rule clip-hi:  # c\n    match: Clip(x, _, m)\n    rewrite: Min(x, m)")
    bound = rule("rule clip-both:  # c\n    match: Clip(x, lo, m)\n    rewrite: Min(Max(x, lo), m)")
    one = rule("rule clip-none:  # c\n    match: Clip(x)\n    rewrite: x")
    assert [m.roots[0] for m in find_matches(graph, wild)] == [clip_hi]
    assert find_matches(graph, bound) == []
    assert [m.roots[0] for m in find_matches(graph, one)] == [clip_plain]
    # trailing omitted inputs do not count
    trailing = Node.make("Clip", [x, None, None], output_types=[x.type]).outputs[0]
    assert [m.roots[0] for m in find_matches(ir_graph([x], [trailing]), one)] == [trailing]


def test_multi_output_roots_share_an_input():
    merge = rules()["merge-matmuls-sharing-input"]
    x, z = ir_input("x", ("N", 4)), ir_input("z", ("N", 4))
    w = [ir_const(np.full((4, k), k, np.float32)) for k in (2, 3, 5)]
    a, b = ir_op("MatMul", x, w[0]), ir_op("MatMul", x, w[1])
    lone = ir_op("MatMul", z, w[2])
    graph = ir_graph([x, z], [a, b, lone])
    matches = find_matches(graph, merge)
    assert [m.roots for m in matches] == [(a, b), (b, a)]
    assert all(m.tensors["x"] is x for m in matches)
    c = ir_op("MatMul", x, w[2])
    three = find_matches(ir_graph([x], [a, b, c]), merge)
    assert len(three) == 6 and len({frozenset(m.roots) for m in three}) == 3
    # the same node never plays two roots
    assert all(m.roots[0].node is not m.roots[1].node for m in three)


def test_multi_output_root_never_reads_another_root():
    r = rule(
        "rule chain:  # c\n    match:\n        y1 = Relu(x)\n        y2 = Add(x, w)\n"
        "    rewrite:\n        y1 = Relu(x)\n        y2 = Add(w, x)"
    )
    x = ir_input("x", (3,))
    y1 = ir_op("Relu", x)
    y2 = ir_op("Add", x, ir_op("Neg", y1))  # w depends on root y1
    assert find_matches(ir_graph([x], [y2]), r) == []
    ok = ir_op("Add", x, ir_input("w", (3,)))
    graph = ir_graph([x, ir_input("w", (3,))], [y1, ok])
    assert [m.roots for m in find_matches(graph, r)] == [(y1, ok)]


def test_outputs_of_one_call_come_from_one_node():
    r = rule(
        "rule split-concat:  # c\n    match:\n        a, b = Split(x, s, axis=1)\n"
        "        out = Concat(a, b, axis=1)\n    rewrite:\n        a, b = Split(x, s, axis=1)\n"
        "        out = x"
    )
    x = ir_input("x", (2, 6))
    sizes = ir_const(np.array([2, 4], np.int64))
    p, q = ir_op("Split", x, sizes, outputs=2, axis=1)
    cat = ir_op("Concat", p, q, axis=1)
    p2, q2 = ir_op("Split", ir_op("Relu", x), sizes, outputs=2, axis=1)
    mixed = ir_op("Concat", p, q2, axis=1)
    graph = ir_graph([x], [cat, mixed, p2])
    (m,) = find_matches(graph, r)
    assert m.roots == (p, q, cat)
    assert m.nodes == frozenset({p.node, cat.node})


def test_where_clause_that_cannot_evaluate_means_no_match():
    r = rule("rule ranked:  # c\n    match: Relu(x)\n    where: rank(x) == 2\n    rewrite: x")
    known, unknown = ir_input("x", (2, 3)), ir_input("y", (2,))
    from optimizer.ir import DType, TensorType, graph_input

    free = graph_input("z", TensorType(DType.FLOAT, None))
    graph = ir_graph([known, unknown, free], [ir_op("Relu", v) for v in (known, unknown, free)])
    assert [m.tensors["x"] for m in find_matches(graph, r)] == [known]


def test_opaque_and_random_nodes_never_match():
    r = rule("rule relu-relu:  # c\n    match: Relu(Relu(x))\n    rewrite: Relu(x)")
    x = ir_input("x", (3,))
    custom = Node.make("Relu", [x], domain="custom.ops", output_types=[x.type], unique=True)
    twin = Node.make("Relu", [x], output_types=[x.type], unique=True)  # kept distinct
    outs = [ir_op("Relu", custom.outputs[0]), ir_op("Relu", twin.outputs[0])]
    assert find_matches(ir_graph([x], outs), r) == []


def test_matches_on_imported_onnx_model_and_limit():
    nodes = [helper.make_node("Mul", ["x", "one"], [f"m{i}"]) for i in range(3)]
    nodes = [
        helper.make_node("Mul", ["x" if i == 0 else f"m{i - 1}", "one"], [f"m{i}"])
        for i in range(3)
    ]
    proto = model(
        nodes, [tensor("x", [2])], [tensor("m2", [2])], [init("one", np.ones(1, np.float32))]
    )
    graph = imported(proto)
    r = rules()["mul-by-one"]
    all_matches = find_matches(graph, r)
    assert len(all_matches) == 3
    assert find_matches(graph, r, limit=2) == all_matches[:2]
    # deterministic: topological order of the root
    order = {n: i for i, n in enumerate(graph.nodes())}
    assert [order[m.roots[0].node] for m in all_matches] == sorted(
        order[m.roots[0].node] for m in all_matches
    )


def test_match_index_agrees_with_find_matches():
    x = ir_input("x", (2, 3))
    one, zero = ir_const(np.ones(1, np.float32)), ir_const(np.zeros(1, np.float32))
    y = ir_op(
        "Add",
        ir_op("Mul", ir_op("Transpose", ir_op("Transpose", x, perm=[1, 0]), perm=[1, 0]), one),
        zero,
    )
    graph = ir_graph([x], [y])
    index = MatchIndex(example_rules().values())
    via_index = {(m.rule.name, m.roots) for m in index.matches(graph)}
    direct = {(r.name, m.roots) for r in example_rules().values() for m in find_matches(graph, r)}
    assert via_index == direct and len(direct) == 3


def _library(n_ops: int = 20) -> list:
    """A synthetic library of 100+ rules over many ops (only their matching speed matters)."""
    unary = ["Relu", "Sigmoid", "Tanh", "Exp", "Log", "Neg", "Abs", "Sqrt", "Erf", "Floor"][:n_ops]
    texts = []
    for u in unary:
        low = u.lower()
        texts += [
            f"rule {low}-twice:  # c\n    match: {u}({u}(x))\n    rewrite: {u}(x)",
            f"rule {low}-add:  # c\n    match: Add({u}(x), {u}(y))\n    rewrite: {u}(Add(x, y))",
            f"rule {low}-mul:  # c\n    match: Mul({u}(x), y)\n    rewrite: Mul(y, {u}(x))",
            f"rule {low}-tr:  # c\n    match: {u}(Transpose(x, perm=p))\n"
            f"    rewrite: Transpose({u}(x), perm=p)",
            f"rule {low}-concat:  # c\n    match: {u}(Concat(x, y, axis=a))\n"
            f"    rewrite: Concat({u}(x), {u}(y), axis=a)",
            f"rule {low}-mm:  # c\n    match:\n        y1 = MatMul({u}(x), w1)\n"
            f"        y2 = MatMul({u}(x), w2)\n    rewrite:\n        y1 = MatMul({u}(x), w1)\n"
            f"        y2 = MatMul({u}(x), w2)",
        ]
    texts += [
        f"rule generic-{i}:  # c\n    match: Add(Mul(x, z), Mul(y, z{i}))\n"
        f"    rewrite: Add(Mul(x, z), Mul(y, z{i}))"
        for i in range(50)
    ]
    from optimizer.rewrite import parse_rules

    return parse_rules("\n\n".join(texts), family="synthetic")


def _big_graph(n: int = 1000):
    x = ir_input("x", (8, 8))
    v = x
    unary = ["Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs"]
    w = ir_const(np.ones((8, 8), np.float32))
    outs = []
    for i in range(n // 5):
        u = ir_op(unary[i % len(unary)], v)
        m = ir_op("Mul", u, w)
        t = ir_op("Transpose", m, perm=[1, 0])
        a = ir_op("MatMul", t, w)
        b = ir_op("Add", a, u)
        outs.append(ir_op("MatMul", t, ir_const(np.full((8, 8), i, np.float32))))
        v = b
    return ir_graph([x], [v] + outs[-3:])


def test_matching_a_library_tries_only_rules_of_each_nodes_op(monkeypatch):
    # The index's promise (its cost grows with the rules that could apply, not with the
    # library): each node is tried against the rules whose first root has its op, once each.
    # Counted, not timed: tests never assert on wall-clock time.
    from optimizer.rewrite import match as match_module

    lib = _library()
    assert len(lib) >= 100
    graph = _big_graph()
    assert len(graph.nodes()) >= 900
    index = MatchIndex(lib)
    tried: list[tuple[str, str]] = []
    original = match_module._Matcher.roots

    def counting(self, first):
        tried.append((first.node.op, self.rule.name))
        return original(self, first)

    monkeypatch.setattr(match_module._Matcher, "roots", counting)
    found = list(index.matches(graph))
    assert found  # the library does match
    expected = sum(len(index.by_op.get(("", n.op), ())) for n in graph.nodes())
    assert len(tried) == expected
    assert all(op == index_rule_op(index, rule) for op, rule in tried)


def index_rule_op(index: MatchIndex, rule_name: str) -> str:
    return next(r.match[0].op for r in index.rules if r.name == rule_name)


@pytest.mark.parametrize("name", ["mul-by-one", "add-zero", "transposes-cancel"])
def test_no_match_where_the_pattern_op_is_absent(name):
    x = ir_input("x", (2, 2))
    assert find_matches(ir_graph([x], [ir_op("Relu", x)]), rules()[name]) == []
