"""Concrete instances of a rule: shapes, dtypes, attribute values and constants.

A bounded proof and a numeric check need the rule's variables made concrete.
:func:`sample_instances` draws them, guided by the ops of the match pattern
(a MatMul's right operand gets a matching inner dimension, a Conv weight the
input's channels and a kernel that fits, a Reshape target the input's element
count, an axis any value in range for the operand's rank) with every attribute
drawn from the whole domain the operator allows (:mod:`sampling`). It keeps the
samples whose ``where`` clause holds, whose match side is a valid ONNX graph
and whose rewrite builds, at several opsets, and returns two tiers:

- the **pool**: many distinct instances (up to :data:`POOL`, within a time
  budget), all of which the numeric check runs;
- the **proof** instances: a few of the most general small ones, which z3
  proves for all input values.

Variables the ``where`` clause or the rewrite inspects with ``value(...)`` /
``all_equal(...)`` get concrete constant data; other variables it requires to
be constant (``is_const``) are constants in the graph but symbolic in proofs;
the rest are graph inputs.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimizer.ir import Graph, ModelMeta, TensorType, Value
from optimizer.rewrite.expr import RuleEvalError, evaluate, instantiate
from optimizer.rewrite.rule import Rule
from optimizer.verify.sampling import (
    Retry,
    RuleShape,
    Sampler,
    analyse,
    seen_values,
    without_absent,
)

#: Opsets sampled, with the share of draws each gets (the newest most). An opset at which
#: the match side never builds stops being drawn once it builds at another. Opset 7 is
#: the oldest: onnxruntime supports nothing older, and the elementwise ops broadcast only
#: since then.
OPSETS = (21, 17, 13, 11, 9, 7)
_OPSET_WEIGHT = {21: 4.0, 17: 2.0, 13: 2.0, 11: 1.0, 9: 1.0, 7: 0.5}
#: Upper bound on the scalars of a proof instance (inputs and constants), to keep proofs small.
MAX_ELEMENTS = 400
#: Upper bound on the scalars of an instance of the numeric tier.
MAX_NUMERIC_ELEMENTS = 3000
#: Instances of the numeric tier, at most, per rule.
POOL = 96
#: Proof instances, at most, per rule.
PROOFS = 4
#: Seconds of sampling per rule, at most (the pool may be smaller when the where clause is
#: rarely true).
BUDGET_S = 1.2
#: Draws per rule, at most (the deterministic bound).
MAX_DRAWS = 4000


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
    #: the rewrite's output shapes (as the IR infers them) differ from the match's in some
    #: dimension, same element type and rank: the rewriter's type guard catches that only
    #: where the dims are static, so the numeric check runs it (never a proof instance)
    reshaped: bool = False
    #: digest of the inspected constants' data (two instances with equal shapes may differ)
    values_digest: str = ""

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

    def proto(self, side: str, rule: Rule):
        """One side as an ONNX model (built once: the checker and onnxruntime both read it)."""
        cache = self.__dict__.setdefault("_protos", {})
        if side not in cache:
            from optimizer.onnx_io import to_proto

            cache[side] = to_proto(self.graph(side, rule))
        return cache[side]

    def describe(self) -> str:
        """``x: float[2,3], w: const float[3,4]; perm=[1, 0] (opset 21)``."""
        parts = []
        for name, v in self.tensors.items():
            if name in self.literal_vars:
                continue
            kind = "" if v.node.is_input else ("const " if name in self.symbolic else "value ")
            parts.append(f"{name}: {kind}{v.type}")
        text = ", ".join(parts)
        if self.attrs:
            text += "; " + ", ".join(f"{k}={_plain(v)}" for k, v in self.attrs.items())
        return text + f" (opset {self.opset})"

    def signature(self) -> tuple:
        shapes = tuple((v.type.dtype, tuple(v.type.shape)) for v in self.tensors.values())
        attrs = tuple((k, repr(_plain(v))) for k, v in sorted(self.attrs.items()))
        return shapes, attrs, self.values_digest, self.opset

    @property
    def size(self) -> int:
        """Scalars in the instance's variables (inputs and constants)."""
        return sum(int(np.prod(v.type.shape)) for v in self.tensors.values())


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


def _holds(rule: Rule, sampler: Sampler, tensors: dict[str, Value]) -> bool:
    env = {**sampler.attrs, **tensors}
    try:
        return rule.where is None or bool(evaluate(rule.where.tree, env))
    except (RuleEvalError, ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as exc:
        raise Retry(f"where clause: {type(exc).__name__}") from None


#: Redraws of the freely drawn inspected constants before a sample whose where clause is
#: false is dropped.
_REDRAWS = 6


def _complete(shape: RuleShape, sampler: Sampler) -> Instance:
    rule = shape.rule
    for root in shape.match:
        sampler.value(root)
    tensors = {name: sampler.make(name) for name in shape.variables}
    total = sum(int(np.prod(v.type.shape)) for v in tensors.values())
    if total > MAX_NUMERIC_ELEMENTS:
        raise Retry("instance too large")
    sampler.reached = True  # the match side builds at this opset
    holds = _holds(rule, sampler, tensors)
    for _ in range(_REDRAWS):
        if holds or not sampler.redraw_values():
            break
        tensors = {name: sampler.make(name) for name in shape.variables}
        holds = _holds(rule, sampler, tensors)
    if not holds:
        raise Retry("where clause false")
    lhs, rhs = build_sides(shape, tensors, sampler.attrs, sampler.opset)
    reshaped = False
    for a, b in zip(lhs, rhs, strict=False):
        if a.type == b.type:
            continue
        ta, tb = a.type, b.type
        if not (
            isinstance(ta, TensorType)
            and isinstance(tb, TensorType)
            and ta.dtype == tb.dtype
            and ta.shape is not None
            and tb.shape is not None
            and len(ta.shape) == len(tb.shape)
        ):
            raise Retry(
                "rewrite changes the element type or rank (the rewriter skips such matches)"
            )
        reshaped = True
    symbolic = [
        n
        for n in shape.variables
        if n in sampler.const and n not in shape.inspected and sampler.types[n].dtype.is_float
    ]
    digest = hashlib.sha1()
    for n in shape.variables:
        if n in sampler.const and n in shape.inspected:
            digest.update(n.encode() + np.ascontiguousarray(sampler.data[n]).tobytes())
    return Instance(
        tensors,
        dict(sampler.attrs),
        symbolic,
        lhs,
        rhs,
        sampler.opset,
        frozenset(shape.literals),
        reshaped=reshaped,
        values_digest=digest.hexdigest()[:16],
    )


def _invalid(inst: Instance, rule: Rule) -> str | None:
    """Why one side is not a valid ONNX model at the instance's opset (None when both are).

    The IR's hand-written type functions are lenient (they type a Concat of mismatched ranks);
    ONNX's checker with strict shape inference is the judge of what a real model may contain.
    """
    import onnx

    for side in ("lhs", "rhs"):
        try:
            onnx.checker.check_model(inst.proto(side, rule), full_check=True)
        except Exception as exc:  # noqa: BLE001 - any checker complaint disqualifies the sample
            return f"{side}: {str(exc).splitlines()[0][:80]}"
    return None


@dataclass
class Samples:
    """What sampling found for one rule."""

    #: every distinct valid instance (the numeric tier), smallest first
    pool: list[Instance] = field(default_factory=list)
    #: the few most general small instances the bounded proofs run on (all in ``pool``)
    proofs: list[Instance] = field(default_factory=list)
    #: the most frequent reasons samples were rejected
    notes: list[str] = field(default_factory=list)
    draws: int = 0
    seconds: float = 0.0


def sample_instances(
    rule: Rule,
    *,
    seed: int = 0,
    pool: int = POOL,
    proofs: int = PROOFS,
    budget_s: float = BUDGET_S,
    max_draws: int = MAX_DRAWS,
) -> Samples:
    """Draw up to ``pool`` distinct valid instances of ``rule`` across opsets (seeded, bounded
    by ``max_draws`` and ``budget_s``) and choose up to ``proofs`` of them for the proofs."""
    shape = analyse(rule)
    rng = np.random.default_rng(seed)
    found: dict[tuple, Instance] = {}
    rejected: set[tuple] = set()
    reasons: dict[str, tuple[int, str]] = {}
    tries = dict.fromkeys(OPSETS, 0)
    built = dict.fromkeys(OPSETS, 0)
    start = time.monotonic()
    draws = 0
    seen: set[tuple[str, Any]] = set()

    def note(key: str, text: str) -> None:
        count, example = reasons.get(key, (0, text))
        reasons[key] = (count + 1, example)

    while draws < max_draws and len(found) < pool:
        # The time budget ends the sampling only once an instance was found: under load a
        # narrow where clause must not turn into "no instance" (max_draws still bounds it).
        if draws % 16 == 0 and found and time.monotonic() - start > budget_s:
            break
        draws += 1
        live = [o for o in OPSETS if built[o] or tries[o] < 40 or not any(built.values())]
        weights = np.array([_OPSET_WEIGHT[o] for o in live])
        opset = live[int(rng.choice(len(live), p=weights / weights.sum()))]
        tries[opset] += 1
        # Seek values not seen yet only while the where clause is easy to satisfy: for a
        # narrow clause the values already found are the ones that satisfy it.
        sampler = Sampler(shape, rng, opset, seen if len(found) * 8 >= draws else None)
        try:
            inst = _complete(shape, sampler)
        except Retry as exc:
            note(str(exc).split(":")[0][:60], str(exc))
            continue
        finally:
            built[opset] += getattr(sampler, "reached", False)
        sig = inst.signature()
        if sig in found or sig in rejected:
            continue
        problem = _invalid(inst, rule)  # checked once per distinct instance
        if problem:
            rejected.add(sig)
            note("not a valid ONNX graph", f"not a valid ONNX graph: {problem}")
            continue
        found[sig] = inst
        seen |= seen_values(sampler.attrs, sampler.data)
    everything = sorted(found.values(), key=lambda i: i.size)
    top = sorted(reasons.items(), key=lambda kv: -kv[1][0])[:3]
    return Samples(
        pool=everything,
        proofs=choose_proofs(everything, proofs),
        notes=[f"{n}x {example[:140]}" for _, (n, example) in top],
        draws=draws,
        seconds=time.monotonic() - start,
    )


def find_instances(
    rule: Rule, *, seed: int = 0, want: int = PROOFS, **options
) -> tuple[list[Instance], list[str]]:
    """Up to ``want`` diverse proof instances of ``rule`` (and notes on why samples failed)."""
    found = sample_instances(rule, seed=seed, proofs=want, **options)
    return found.proofs, found.notes


def choose_proofs(pool: list[Instance], want: int) -> list[Instance]:
    """The proof instances: small ones (at most :data:`MAX_ELEMENTS` scalars) at the newest
    opset that has any (older opsets fill up), chosen for generality by :func:`_diverse`."""
    small = [i for i in pool if not i.reshaped and i.size <= MAX_ELEMENTS]
    chosen: list[Instance] = []
    for opset in sorted({i.opset for i in small}, reverse=True):
        if len(chosen) >= want:
            break
        at = [i for i in small if i.opset == opset]
        chosen += _diverse(at, want - len(chosen))
    return chosen


def _diverse(candidates: list[Instance], want: int) -> list[Instance]:
    """First the most generic instance (most dimensions above 1, then highest ranks, within a
    size budget), then one with size-1 dimensions (broadcasting), then instances that differ
    in ranks or attributes, then in any dimension; smaller ones first."""

    def ranks(inst: Instance) -> tuple:
        shapes = tuple(len(v.type.shape) for v in inst.tensors.values())
        return shapes, tuple(sorted(map(str, inst.attrs.items())))

    def generic(inst: Instance) -> tuple[int, int]:
        shapes = [tuple(v.type.shape) for v in inst.tensors.values()]
        return sum(d > 1 for s in shapes for d in s), sum(len(s) for s in shapes)

    if want <= 0:
        return []
    by_size = sorted(candidates, key=lambda i: i.size)
    chosen: list[Instance] = []
    budget = [i for i in by_size if i.size <= 150] or by_size
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
    return chosen[:want]


def has_size_one(inst: Instance) -> bool:
    """Whether some variable has a size-1 dimension (broadcasting is exercised)."""
    return any(1 in tuple(v.type.shape) for v in inst.tensors.values())


__all__ = [
    "MAX_ELEMENTS",
    "OPSETS",
    "POOL",
    "PROOFS",
    "Instance",
    "NoInstance",
    "Samples",
    "analyse",
    "build_sides",
    "choose_proofs",
    "find_instances",
    "has_size_one",
    "sample_instances",
]
