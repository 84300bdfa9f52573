"""Concrete instances of a rule: shapes, dtypes, attribute values and constants.

A bounded proof and a numeric check need the rule's variables made concrete.
:func:`find_instances` samples them, guided by the ops of the match pattern
(a MatMul's right operand gets a matching inner dimension, a Conv weight the
input's channels, a Reshape target the input's element count, an axis a value
in range for the operand's rank), keeps samples whose ``where`` clause holds
and whose two sides build with equal output types, and returns a few diverse
ones. Sampling is seeded and bounded in tries and time.

Variables the ``where`` clause or the rewrite inspects with ``value(...)`` /
``all_equal(...)`` get concrete constant data; other variables it requires to
be constant (``is_const``) are constants in the graph but symbolic in proofs;
the rest are graph inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimizer.ir import Graph, ModelMeta, Value
from optimizer.rewrite.expr import RuleEvalError, evaluate, instantiate
from optimizer.rewrite.rule import Rule
from optimizer.verify.sampling import Retry, RuleShape, Sampler, analyse, without_absent

#: Opsets tried in order; a rule written with older attribute forms gets an older one.
OPSETS = (21, 17, 13, 11, 9, 6)
#: Upper bound on the scalars of one instance (inputs and constants), to keep proofs small.
MAX_ELEMENTS = 400


@dataclass
class Instance:
    """One concrete instance of a rule, with both sides built as IR values."""

    tensors: dict[str, Value]
    attrs: dict[str, Any]
    symbolic: list[str]
    lhs: list[Value]
    rhs: list[Value]
    opset: int
    literal_vars: frozenset[str] = frozenset()

    @property
    def inputs(self) -> list[Value]:
        """Graph inputs (non-constant variables), in variable order."""
        return [v for v in self.tensors.values() if v.node.is_input]

    def graph(self, side: str, rule: Rule) -> Graph:
        """One side as a graph over the instance's inputs."""
        outs = self.lhs if side == "lhs" else self.rhs
        return Graph(
            tuple(self.inputs),
            tuple(outs),
            tuple(rule.outputs),
            meta=ModelMeta(opset_imports=(("", self.opset),)),
        )

    def describe(self) -> str:
        """``x: float[2,3], w: const float[3,4]; perm=[1, 0]``."""
        parts = []
        for name, v in self.tensors.items():
            if name in self.literal_vars:
                continue
            kind = "" if v.node.is_input else ("const " if name in self.symbolic else "value ")
            parts.append(f"{name}: {kind}{v.type}")
        text = ", ".join(parts)
        if self.attrs:
            text += "; " + ", ".join(f"{k}={_plain(v)}" for k, v in self.attrs.items())
        return text

    def signature(self) -> tuple:
        shapes = tuple(tuple(v.type.shape) for v in self.tensors.values())
        return shapes, tuple((k, repr(_plain(v))) for k, v in sorted(self.attrs.items()))


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, tuple):
        return list(v)
    return v


class NoInstance(Exception):
    """No instance satisfies the rule's ``where`` clause within the search budget."""


# ---------------------------------------------------------------- search


def build_sides(shape: RuleShape, tensors: dict[str, Value], attrs: dict[str, Any], opset: int):
    """Both sides of the rule over these bindings: (match values, rewrite values).

    Raises :class:`Retry` naming the side that cannot be built."""
    env = {**attrs, **tensors}
    try:
        lhs = instantiate(without_absent(shape.match, env), tensors, attrs, opset=opset)
    except (RuleEvalError, ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as exc:
        raise Retry(f"match side: {type(exc).__name__}: {exc}") from None
    try:
        rhs = instantiate(without_absent(shape.rule.rewrite, env), tensors, attrs, opset=opset)
    except (RuleEvalError, ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as exc:
        raise Retry(f"rewrite cannot be built: {type(exc).__name__}: {exc}") from None
    return lhs, rhs


def _complete(shape: RuleShape, sampler: Sampler) -> Instance:
    rule = shape.rule
    for root in shape.match:
        sampler.value(root)
    tensors = {name: sampler.make(name) for name in shape.variables}
    total = sum(int(np.prod(v.type.shape)) for v in tensors.values())
    if total > MAX_ELEMENTS:
        raise Retry("instance too large")
    env = {**sampler.attrs, **tensors}
    try:
        holds = rule.where is None or evaluate(rule.where.tree, env)
    except (RuleEvalError, ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as exc:
        raise Retry(f"where clause: {type(exc).__name__}") from None
    if not holds:
        raise Retry("where clause false")
    lhs, rhs = build_sides(shape, tensors, sampler.attrs, sampler.opset)
    if any(a.type != b.type for a, b in zip(lhs, rhs, strict=False)):
        raise Retry("rewrite changes the type (the rewriter skips such matches)")
    symbolic = [
        n
        for n in shape.variables
        if n in sampler.const and n not in shape.inspected and sampler.types[n].dtype.is_float
    ]
    inst = Instance(
        tensors, dict(sampler.attrs), symbolic, lhs, rhs, sampler.opset, frozenset(shape.literals)
    )
    return inst


def _invalid(inst: Instance, rule: Rule) -> str | None:
    """Why one side is not a valid ONNX model at the instance's opset (None when both are).

    The IR's hand-written type functions are lenient (they type a Concat of mismatched ranks);
    ONNX's checker with strict shape inference is the judge of what a real model may contain.
    """
    import onnx

    from optimizer.onnx_io import to_proto

    for side in ("lhs", "rhs"):
        try:
            onnx.checker.check_model(to_proto(inst.graph(side, rule)), full_check=True)
        except Exception as exc:  # noqa: BLE001 - any checker complaint disqualifies the sample
            return f"{side}: {str(exc).splitlines()[0][:80]}"
    return None


def find_instances(
    rule: Rule, *, seed: int = 0, want: int = 4, max_tries: int = 600, budget_s: float = 4.0
) -> tuple[list[Instance], list[str]]:
    """Up to ``want`` diverse instances of ``rule`` (and notes on why samples failed)."""
    shape = analyse(rule)
    rng = np.random.default_rng(seed)
    found: dict[tuple, Instance] = {}
    reasons: dict[str, tuple[int, str]] = {}
    start = time.monotonic()
    enough = max(want * 2, 6)
    rejected: set[tuple] = set()
    for opset in OPSETS:
        for _ in range(max_tries):
            if len(found) >= enough or time.monotonic() - start > budget_s:
                break
            sampler = Sampler(shape, rng, opset)
            try:
                inst = _complete(shape, sampler)
            except Retry as exc:
                key = str(exc).split(":")[0][:60]
                count, example = reasons.get(key, (0, str(exc)))
                reasons[key] = (count + 1, example)
                continue
            sig = inst.signature()
            if sig in found or sig in rejected:
                continue
            problem = _invalid(inst, rule)  # checked once per distinct instance
            if problem:
                rejected.add(sig)
                key = "not a valid ONNX graph"
                count, example = reasons.get(key, (0, f"{key}: {problem}"))
                reasons[key] = (count + 1, example)
                continue
            found[sig] = inst
        if found:
            break
    chosen = _diverse(list(found.values()), want)
    top = sorted(reasons.items(), key=lambda kv: -kv[1][0])[:3]
    notes = [f"{n}x {example[:140]}" for _, (n, example) in top]
    return chosen, notes


def _diverse(candidates: list[Instance], want: int) -> list[Instance]:
    """First the most generic instance (most dimensions above 1, then highest ranks, within a
    size budget), then one with size-1 dimensions (broadcasting), then instances that differ
    in ranks or attributes, then in any dimension; smaller ones first."""

    def size(inst: Instance) -> int:
        return sum(int(np.prod(v.type.shape)) for v in inst.tensors.values())

    def ranks(inst: Instance) -> tuple:
        shapes = tuple(len(v.type.shape) for v in inst.tensors.values())
        return shapes, tuple(sorted(map(str, inst.attrs.items())))

    def generic(inst: Instance) -> tuple[int, int]:
        shapes = [tuple(v.type.shape) for v in inst.tensors.values()]
        return sum(d > 1 for s in shapes for d in s), sum(len(s) for s in shapes)

    by_size = sorted(candidates, key=size)
    chosen: list[Instance] = []
    budget = [i for i in by_size if size(i) <= 150] or by_size
    if budget:
        chosen.append(max(budget, key=generic))
    ones = [i for i in by_size if has_size_one(i)]
    if ones and want > 1 and not any(has_size_one(c) for c in chosen):
        chosen.append(ones[0])
    for key in (ranks, lambda i: i.signature()):
        for inst in by_size:
            if len(chosen) >= want:
                return chosen
            if inst not in chosen and all(key(inst) != key(c) for c in chosen):
                chosen.append(inst)
    return chosen


def has_size_one(inst: Instance) -> bool:
    """Whether some variable has a size-1 dimension (broadcasting is exercised)."""
    return any(1 in tuple(v.type.shape) for v in inst.tensors.values())


__all__ = [
    "OPSETS",
    "Instance",
    "NoInstance",
    "analyse",
    "build_sides",
    "find_instances",
    "has_size_one",
]
