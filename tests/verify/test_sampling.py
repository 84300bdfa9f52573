"""Instance sampling covers the operators' attribute and shape domains, not just easy corners."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import optimizer.onnx_io  # noqa: F401 - installs ONNX shape inference
from optimizer.rewrite import load_rules
from optimizer.rewrite.rule import parse_rules
from optimizer.verify import verify_rule
from optimizer.verify.instances import MAX_ELEMENTS, POOL, sample_instances


def _rule(text: str):
    (rule,) = parse_rules(text, family="sampling")
    return rule


def _pool(text: str, **options):
    samples = sample_instances(_rule(text), **options)
    assert samples.pool, samples.notes
    return samples


def _values(inst, name):
    return inst.tensors[name].constant.numpy().tolist()


CONV = """
rule conv-same:  # a conv is itself
    match: Conv(x, w, auto_pad=ap, dilations=dl, group=g, kernel_shape=ks, pads=pd, strides=st)
    rewrite: Conv(x, w, auto_pad=ap, dilations=dl, group=g, kernel_shape=ks, pads=pd, strides=st)
"""


def test_conv_attributes_cover_their_domains():
    pool = _pool(CONV).pool
    assert len(pool) >= POOL // 2
    attrs = [i.attrs for i in pool]
    assert {a["ap"] for a in attrs} >= {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"}
    assert any(a["dl"] and 2 in a["dl"] for a in attrs)
    assert any(a["dl"] and len(set(a["dl"])) > 1 for a in attrs)  # per-axis values
    assert any(a["st"] and 2 in a["st"] for a in attrs)
    assert any(a["pd"] and a["pd"][0] != a["pd"][len(a["pd"]) // 2] for a in attrs)  # asymmetric
    assert any(a["pd"] and max(a["pd"]) >= 2 for a in attrs)
    assert any(a["g"] and a["g"] > 1 for a in attrs)
    depthwise = [i for i in pool if i.attrs["g"] and i.attrs["g"] == i.tensors["x"].type.shape[1]]
    assert any(i.attrs["g"] > 1 for i in depthwise)
    assert {len(i.tensors["x"].type.shape) for i in pool} >= {3, 4}
    assert any(a[k] is None for a in attrs for k in ("dl", "st", "pd"))  # absent attributes


def test_every_permutation_and_rank_is_drawn():
    pool = _pool(
        """
rule transpose-same:  # a transpose is itself
    match: Transpose(x, perm=p)
    rewrite: Transpose(x, perm=p)
"""
    ).pool
    perms = {tuple(i.attrs["p"]) for i in pool if i.attrs["p"] is not None}
    assert perms >= set(itertools.permutations(range(3)))
    assert {len(i.tensors["x"].type.shape) for i in pool} >= {1, 2, 3, 4}
    assert any(i.attrs["p"] is None for i in pool)
    dims = {d for i in pool for d in i.tensors["x"].type.shape}
    assert dims == {1, 2, 3, 4}


def test_axes_negative_and_positive():
    pool = _pool(
        """
rule softmax-same:  # a softmax is itself
    match: Softmax(x, axis=a)
    rewrite: Softmax(x, axis=a)
"""
    ).pool
    axes = {(i.attrs["a"], len(i.tensors["x"].type.shape)) for i in pool}
    assert any(a < 0 for a, _ in axes) and any(a > 0 for a, _ in axes)
    assert any(r == 4 and a in (-4, 3) for a, r in axes)


def test_reshape_targets_hold_zero_and_minus_one():
    pool = _pool(
        """
rule reshape-same:  # a reshape is itself
    match: Reshape(x, s)
    where: is_const(s) and len(value(s)) > 0
    rewrite: Reshape(x, s)
"""
    ).pool
    targets = [_values(i, "s") for i in pool]
    assert any(0 in t for t in targets) and any(-1 in t for t in targets)
    assert any(0 in t and -1 in t for t in targets)


def test_split_sizes_are_unequal_and_axes_vary():
    pool = _pool(
        """
rule split-same:  # a split is itself
    match:
        a, b = Split(x, s, axis=t)
    where: is_const(s)
    rewrite:
        a, b = Split(x, s, axis=t)
"""
    ).pool
    sizes = [_values(i, "s") for i in pool]
    assert any(a != b for a, b in sizes)
    assert any(i.attrs["t"] < 0 for i in pool) and any(i.attrs["t"] > 0 for i in pool)


def test_slices_have_negative_steps_and_out_of_range_ends():
    pool = _pool(
        """
rule slice-same:  # a slice is itself
    match: Slice(x, s, e, a, st)
    where: is_const(s) and is_const(e) and is_const(a) and is_const(st)
    rewrite: Slice(x, s, e, a, st)
"""
    ).pool
    steps = [v for i in pool for v in _values(i, "st")]
    assert {-2, -1, 1, 2} <= set(steps)
    ends = [v for i in pool for v in _values(i, "e")]
    assert any(v > 4 for v in ends) and any(v < 0 for v in ends)
    assert any(v < 0 for i in pool for v in _values(i, "a"))


def test_broadcast_constants_take_every_layout():
    """A constant added to a conv output: size-1 dims anywhere, lower ranks, a scalar."""
    pool = _pool(
        """
rule conv-add-same:  # conv + b is itself
    match: Add(Conv(x, w), b)
    where: is_const(b)
    rewrite: Add(Conv(x, w), b)
"""
    ).pool
    layouts = {tuple(i.tensors["b"].type.shape) for i in pool}
    assert () in layouts
    assert any(len(s) < 4 and len(s) > 0 for s in layouts)
    assert any(len(s) == 4 and s[1] == 1 and s[-1] > 1 for s in layouts)  # not per channel


def test_constants_a_where_clause_inspects_include_larger_identities():
    rules = {r.name: r for r in load_rules()}
    for name, axes in (("matmul-identity", (0, 1)), ("conv-identity-kernel", (0, 1))):
        samples = sample_instances(rules[name])
        sizes = {i.tensors["w"].type.shape[axes[0]] for i in samples.pool}
        assert max(sizes) >= 3, (name, sizes)
        assert any(i.tensors["w"].type.shape[0] >= 2 for i in samples.proofs), name
        for inst in samples.pool:
            w = inst.tensors["w"].constant.numpy()
            eye = np.eye(w.shape[0]).reshape(w.shape[:2] + (1,) * (w.ndim - 2))
            assert np.array_equal(w, eye)


def test_proof_instances_are_small_and_the_pool_spans_opsets():
    samples = _pool(
        """
rule add-comm:  # x + y = y + x
    match: Add(x, y)
    rewrite: Add(y, x)
"""
    )
    assert len(samples.pool) == POOL
    assert 1 <= len(samples.proofs) <= 4
    assert all(i.size <= MAX_ELEMENTS and not i.reshaped for i in samples.proofs)
    assert len({i.opset for i in samples.pool}) >= 3
    assert samples.pool == sorted(samples.pool, key=lambda i: i.size)


def test_sampling_is_seeded():
    rule = _rule(CONV)
    a = [i.signature() for i in sample_instances(rule, seed=3, max_draws=200).pool]
    b = [i.signature() for i in sample_instances(rule, seed=3, max_draws=200).pool]
    assert a == b


@pytest.mark.parametrize("name", ["relu-relu", "transpose-transpose", "conv-add-bias"])
def test_the_numeric_tier_runs_many_instances_and_the_proofs_a_few(name):
    rule = next(r for r in load_rules() if r.name == name)
    result = verify_rule(rule)
    assert result.ok, result.message
    assert result.numeric == "ok"
    assert result.numeric_instances >= 32, result.message
    assert 1 <= len(result.instances) <= 4
