"""Deliberately wrong rules are refused with counterexamples; right ones are proved."""

from __future__ import annotations

from pathlib import Path

import pytest

import optimizer.onnx_io  # noqa: F401 - installs ONNX shape inference
from optimizer.rewrite.rule import parse_rules
from optimizer.verify import verify_rule

WRONG = parse_rules(
    """
rule relu-over-add:  # relu(x + y) = relu(x) + relu(y) (false for mixed signs)
    match: Relu(Add(x, y))
    rewrite: Add(Relu(x), Relu(y))

rule concat-wrong-axis:  # flattening a column-concat is not flattening a row-concat
    match: Flatten(Concat(x, y, axis=1), axis=0)
    where: rank(x) == 2
    rewrite: Flatten(Concat(x, y, axis=0), axis=0)

rule transpose-wrong-perm:  # [1,2,0] applied twice is not the identity (its inverse is [2,0,1])
    match: Transpose(Transpose(x, perm=[1, 2, 0]), perm=[1, 2, 0])
    rewrite: Identity(x)

rule batchnorm-wrong-epsilon:  # BN folded with ten times its epsilon
    match: BatchNormalization(x, s, b, m, v, epsilon=eps)
    where: rank(x) == 2 and eps > 0
    rewrite: Add(Mul(Sub(x, m), Div(s, Sqrt(Add(v, scalar(eps * 10, like=v))))), b)

rule matmul-commuted:  # x @ y = y @ x (false even for square matrices)
    match: MatMul(x, y)
    where: rank(x) == 2 and rank(y) == 2
    rewrite: MatMul(y, x)

rule split-sizes-swapped:  # the parts of a split taken with the sizes in the other order
    match:
        a, b = Split(x, s, axis=0)
    where: is_const(s) and len(value(s)) == 2
    rewrite:
        b, a = Split(x, ints(value(s)[1], value(s)[0]), axis=0)

rule mul-by-zero-dropped:  # x*0 + y = x + y: the multiplication by zero dropped, not the term
    match: Add(Mul(x, 0), y)
    rewrite: Add(x, y)

rule division-moved-wrongly:  # (x*y)/c = (x/c)*(y/c): the constant divides twice
    match: Div(Mul(x, y), c)
    where: is_const(c) and 0 not in value(c)
    rewrite: Mul(Div(x, c), Div(y, c))

rule reshape-as-transpose:  # reshaping (m, n) to (n, m) is not a transpose
    match: Reshape(x, s)
    where: rank(x) == 2 and is_const(s) and list(value(s)) == [dim(x, 1), dim(x, 0)]
    rewrite: Transpose(x, perm=[1, 0])

rule gelu-tanh-claimed-exact:  # the tanh approximation of Gelu is not Gelu
    match: Gelu(x)
    rewrite:
        cube = Mul(scalar(0.044715, like=x), Mul(x, Mul(x, x)))
        inner = Mul(scalar(0.7978845608028654, like=x), Add(x, cube))
        out = Mul(Mul(x, scalar(0.5, like=x)), Add(Tanh(inner), scalar(1.0, like=x)))

rule softmax-wrong-axis:  # softmax over the last axis of a transpose is softmax over the first axis
    match: Softmax(Transpose(x, perm=[1, 0]), axis=-1)
    rewrite: Transpose(Softmax(x, axis=-1), perm=[1, 0])

rule sigmoid-as-tanh:  # sigmoid(x) = (tanh(x) + 1) / 2 (needs x/2 inside the tanh)
    match: Sigmoid(x)
    rewrite: Mul(Add(Tanh(x), scalar(1.0, like=x)), scalar(0.5, like=x))

rule sub-commuted:  # x - y = y - x
    match: Sub(x, y)
    rewrite: Sub(y, x)

rule matmul-associative-with-vectors:  # (a@b)@c = a@(b@c) fails for a vector b, or vectors a, c
    match: MatMul(MatMul(a, b), c)
    rewrite: MatMul(a, MatMul(b, c))
""",
    family="wrong",
)


DATA = Path(__file__).parent / "data"

#: Rules of the right shape that hold only on part of their attribute or shape domain: each is
#: refused only when sampling reaches the part where it fails (a dilation of 2, a bias laid out
#: along another axis, a permutation that moves a batch axis, a 0 in a reshape target, ...).
WRONG_DOMAIN = parse_rules((DATA / "wrong_domain.rules").read_text(), family="wrong-domain")

RIGHT = parse_rules(
    """
rule mul-distributes-over-add:  # x*z + y*z = (x+y)*z
    match: Add(Mul(x, z), Mul(y, z))
    rewrite: Mul(Add(x, y), z)

rule relu-matmul-associative:  # relu((a@b)@c) = relu(a@(b@c)) (vectors contract other axes)
    match: Relu(MatMul(MatMul(a, b), c))
    where: rank(a) >= 2 and rank(b) >= 2 and rank(c) >= 2
    rewrite: Relu(MatMul(a, MatMul(b, c)))

rule transpose-inverse:  # T_q(T_p(x)) = x when q undoes p
    match: Transpose(Transpose(x, perm=p), perm=q)
    where: p != None and compose(p, q) == identity_perm(rank(x))
    rewrite: Identity(x)

rule softmax-shift:  # softmax(x + c) = softmax(x) for a scalar c
    match: Softmax(Add(x, c), axis=a)
    where: is_scalar_like(c)
    rewrite: Softmax(x, axis=a)

rule split-then-concat:  # concatenating the parts of a split gives back the input
    match: Concat(a, b, axis=0)
    where: False
    rewrite: Identity(a)

rule batchnorm-decomposed:  # BN(x) = (x - m) * s / sqrt(v + eps) + b for rank-2 x
    match: BatchNormalization(x, s, b, m, v, epsilon=eps)
    where: rank(x) == 2 and eps > 0
    rewrite: Add(Mul(Sub(x, m), Div(s, Sqrt(Add(v, scalar(eps, like=v))))), b)
""",
    family="right",
)


@pytest.mark.parametrize("rule", WRONG, ids=[r.name for r in WRONG])
def test_wrong_rule_is_refused_with_a_counterexample(rule):
    result = verify_rule(rule)
    assert result.status in ("refuted", "unsafe"), (result.status, result.message)
    assert not result.ok
    text = result.counterexample
    assert "match" in text and "rewrite" in text, text
    assert result.message


@pytest.mark.parametrize(
    "rule", [r for r in RIGHT if r.name != "split-then-concat"], ids=lambda r: r.name
)
def test_right_rule_is_proved(rule):
    result = verify_rule(rule)
    assert result.status == "proved", (result.message, result.counterexample)
    assert result.numeric == "ok"


def test_unsatisfiable_where_clause_is_no_instance():
    rule = next(r for r in RIGHT if r.name == "split-then-concat")
    result = verify_rule(rule)
    assert result.status == "no-instance" and not result.ok


def test_division_by_a_possibly_zero_value_needs_a_precondition():
    unguarded, guarded = parse_rules(
        """
rule neg-through-div:  # (-x)/y = -(x/y), but y may be zero
    match: Div(Neg(x), y)
    rewrite: Neg(Div(x, y))

rule neg-through-div-const:  # (-x)/c = -(x/c) for a nonzero constant c
    match: Div(Neg(x), c)
    where: is_const(c) and 0 not in value(c)
    rewrite: Neg(Div(x, c))
""",
        family="div",
    )
    result = verify_rule(unguarded)
    assert result.status == "unsafe" and "may be zero" in result.message
    assert "precondition" in result.message
    assert verify_rule(guarded).status == "proved"


@pytest.mark.parametrize("rule", WRONG_DOMAIN, ids=[r.name for r in WRONG_DOMAIN])
def test_rule_wrong_on_part_of_its_domain_is_refused(rule):
    result = verify_rule(rule)
    assert result.status == "refuted", (result.status, result.message, result.instances)
    text = result.counterexample
    assert text.startswith("instance: ") and "match" in text and "rewrite" in text, text
    assert "numeric check failed" in result.message or "z3" in result.message


def test_a_rewrite_that_changes_the_shape_is_refused_with_both_outputs():
    """Reshape(Reshape(x, s1), s2) = Reshape(x, s2) is false when s2 holds a 0 (it copies a dim
    of the intermediate): the two sides have different shapes, which the rewriter's type guard
    sees only where dims are static, so the verifier refuses it."""
    rule = next(r for r in WRONG_DOMAIN if r.name == "reshape-reshape-with-zero")
    result = verify_rule(rule)
    assert result.status == "refuted"
    assert "changes the output shape" in result.message
    assert "differs from reference shape" in result.message
    assert "  s2 = " in result.counterexample and "0" in result.counterexample


def test_split_of_concat_on_different_axes_is_sound_because_vacuous():
    """Split(Concat(x, y, axis=c), [dim(x, t), dim(y, t)], axis=t) with c != t is no valid graph
    (the sizes sum to twice the axis) unless c and t name one axis (c = t - rank): every instance
    the sampler finds has them equal modulo the rank, and there the rule is right."""
    from optimizer.verify.instances import sample_instances

    (rule,) = parse_rules((DATA / "vacuous.rules").read_text(), family="vacuous")
    samples = sample_instances(rule)
    assert len(samples.pool) >= 24
    for inst in samples.pool:
        r = len(inst.tensors["x"].type.shape)
        assert inst.attrs["c"] % r == inst.attrs["t"] % r, inst.describe()
    assert any(inst.attrs["c"] != inst.attrs["t"] for inst in samples.pool)
    assert verify_rule(rule).status == "proved"
