"""The rule language: each feature parses to the pattern it means, and a rule's own source
text parses back to the same rule."""

from __future__ import annotations

import pytest
from rewrite_helpers import FIXTURES, rule

from optimizer.rewrite import RuleSyntaxError, load_rules, parse_rules
from optimizer.rewrite.rule import AttrExpr, AttrVar, Build, Literal, Op, Var

FEATURES = [
    # one expression, literal
    """rule mul-one:  # x*1 = x
    match: Mul(x, 1)
    rewrite: x""",
    # negative literal, float literal
    """rule add-neg:  # x + -1.5 written as a subtraction
    match: Add(x, -1.5)
    rewrite: Sub(x, scalar(1.5, like=x))""",
    # attribute variable and attribute literal
    """rule gemm-plain:  # Gemm without transposes is a MatMul plus bias
    match: Gemm(a, b, c, transA=0, transB=0, alpha=al, beta=be)
    where: al == 1.0 and be == 1.0
    rewrite: Add(MatMul(a, b), c)""",
    # let bindings in a match and a rewrite, several outputs, builders
    """rule split-merge:  # two MatMuls of one x run as one
    match:
        y1 = MatMul(x, w1)
        y2 = MatMul(x, w2)
    where: is_const(w1) and rank(w1) == 2
    rewrite:
        y = MatMul(x, Concat(w1, w2, axis=1))
        y1, y2 = Split(y, ints(dim(w1, 1), dim(w2, 1)), axis=-1)""",
    # a multi-output call in the match
    """rule split-concat:  # concatenating the parts of a split gives the input back
    match:
        a, b = Split(x, sizes, axis=ax)
        out = Concat(a, b, axis=ax)
    rewrite:
        a, b = Split(x, sizes, axis=ax)
        out = x""",
    # domains and wildcards
    """rule ms-gelu:  # FastGelu of the contrib domain, ignoring its bias slot
    match: ms.FastGelu(x, _)
    rewrite: Gelu(x)""",
    # expressions in rewrite attributes, comments between sections
    """rule transposes-compose:  # two transposes are one
    match: Transpose(Transpose(x, perm=p), perm=q)
    # a comment line inside a rule
    rewrite: Transpose(x, perm=compose(p, q))""",
]


@pytest.mark.parametrize("text", FEATURES, ids=lambda t: t.split()[1].rstrip(":"))
def test_source_round_trip(text):
    parsed = rule(text)
    again = rule(parsed.source)
    assert again == parsed
    assert again.digest == parsed.digest


def test_pattern_structure():
    r = rule(FEATURES[2])
    (root,) = r.match
    assert isinstance(root, Op) and root.op == "Gemm"
    assert [a.name for a in root.args] == ["a", "b", "c"]
    attrs = dict(root.attrs)
    assert attrs["alpha"] == AttrVar("al") and attrs["beta"] == AttrVar("be")
    assert isinstance(attrs["transA"], AttrExpr) and attrs["transA"].source == "0"
    assert r.variables() == ["a", "b", "c"]
    assert r.attr_variables() == ["al", "be"]
    assert r.where is not None and "al == 1.0" in r.where.source


def test_literals_and_wildcards():
    assert rule(FEATURES[1]).match[0].args[1] == Literal(-1.5)
    ms = rule(FEATURES[5])
    assert ms.match[0].domain == "com.microsoft" and ms.match[0].args[1] == Var("_")


def test_multi_output_calls_share_a_call_id():
    r = rule(FEATURES[3])
    assert r.outputs == ("y1", "y2")
    s1, s2 = r.rewrite
    assert s1.op == s2.op == "Split" and s1.call == s2.call and (s1.index, s2.index) == (0, 1)
    assert isinstance(s1.args[1], Build)
    m = rule(FEATURES[4])
    assert m.outputs == ("a", "b", "out")
    concat = m.match[2]
    a, b = concat.args
    assert a.call == b.call and (a.index, b.index) == (0, 1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("rule no-comment:\n    match: Relu(x)\n    rewrite: x", "comment"),
        ("rule r:  # c\n    match: Relu(x)\n    rewrite: y", "never binds"),
        ("rule r:  # c\n    match: Relu(x)\n    rewrite: Add(x, 1)", "scalar"),
        ("rule r:  # c\n    match: Relu(x)", "rewrite"),
        ("rule r:  # c\n    match: Relu(x\n    rewrite: x", "match"),
        ("rule Bad_Name:  # c\n    match: Relu(x)\n    rewrite: x", "kebab"),
    ],
)
def test_syntax_errors(text, message):
    with pytest.raises(RuleSyntaxError, match=message):
        parse_rules(text, family="test")


def test_fixture_library_loads():
    rules = load_rules(FIXTURES)
    assert {r.family for r in rules} == {"examples"}
    assert len({r.name for r in rules}) == len(rules) >= 5
