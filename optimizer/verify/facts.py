"""Axioms of the uninterpreted functions (exp, sqrt, tanh, erf, log, rounding, constants).

Nonlinear functions are uninterpreted in proofs: z3 knows nothing of ``exp``
except what these axioms state. Each :class:`Fact` is instantiated on the
ground terms a query contains (never as a quantifier, so queries stay
decidable), and each has a numeric check, run by the tests, that the real
function satisfies it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import z3

from optimizer.verify.arith import FLOAT_FUNCTIONS
from optimizer.verify.symbolic import Atom, Poly


@dataclass(frozen=True)
class Fact:
    """A family of ground axioms over the atoms of a query."""

    name: str
    statement: str
    #: atoms of the query -> z3 formulas
    instantiate: Callable[[list[Atom]], Iterable[z3.BoolRef]]
    #: random generator -> True when the real functions satisfy one random instance
    check: Callable[[np.random.Generator], bool]


def _fn_atoms(atoms: list[Atom], name: str) -> list[Atom]:
    return [a for a in atoms if a.kind == "fn" and a.args[0] == name]


def _arg(a: Atom) -> z3.ArithRef:
    return a.args[1].to_z3()


def _per_atom(name: str, make: Callable[[z3.ArithRef, z3.ArithRef], list]) -> Callable:
    def inst(atoms: list[Atom]) -> Iterable[z3.BoolRef]:
        for a in _fn_atoms(atoms, name):
            yield from make(a.to_z3(), _arg(a))

    return inst


def _exp_product(atoms: list[Atom]) -> Iterable[z3.BoolRef]:
    """exp(a) * exp(b) = exp(a + b) for pairs present (and exp(a) * exp(-a) = 1)."""
    exps = _fn_atoms(atoms, "exp")
    by_arg = {a.args[1]: a for a in exps}
    for i, a in enumerate(exps):
        for b in exps[i:]:
            total = a.args[1] + b.args[1]
            if total.is_const:
                yield a.to_z3() * b.to_z3() == _exp_const(total)
            elif total in by_arg:
                yield a.to_z3() * b.to_z3() == by_arg[total].to_z3()


def _exp_ratio(atoms: list[Atom]) -> Iterable[z3.BoolRef]:
    """exp(a) * exp(d) = exp(b) * exp(c) when a - b = c - d (shift invariance of softmax)."""
    exps = _fn_atoms(atoms, "exp")[:40]
    by_delta: dict[Poly, list[tuple[Atom, Atom]]] = {}
    for a in exps:
        for b in exps:
            if a is not b:
                delta = a.args[1] - b.args[1]
                if not delta.is_const or delta.value != 0:
                    by_delta.setdefault(delta, []).append((a, b))
    for pairs in by_delta.values():
        a, b = pairs[0]
        for c, d in pairs[1:]:
            yield a.to_z3() * d.to_z3() == b.to_z3() * c.to_z3()


def _exp_const(p: Poly) -> z3.ArithRef:
    v = p.value
    return (
        z3.RealVal(1) if v == 0 else z3.Function("exp", z3.RealSort(), z3.RealSort())(z3.RealVal(v))
    )


def _sqrt_facts(s: z3.ArithRef, t: z3.ArithRef) -> list:
    return [s >= 0, z3.Implies(t >= 0, s * s == t), z3.Implies(t > 0, s > 0)]


def _sqrt_monotone(atoms: list[Atom]) -> Iterable[z3.BoolRef]:
    roots = _fn_atoms(atoms, "sqrt")
    for a in roots:
        for b in roots:
            if a is not b:
                yield z3.Implies(z3.And(_arg(a) >= 0, _arg(a) < _arg(b)), a.to_z3() < b.to_z3())


def _odd(name: str) -> Callable:
    def inst(atoms: list[Atom]) -> Iterable[z3.BoolRef]:
        found = {a.args[1]: a for a in _fn_atoms(atoms, name)}
        for arg, a in found.items():
            neg = -arg
            if neg in found:
                yield a.to_z3() == -found[neg].to_z3()

    return inst


def _log_exp(atoms: list[Atom]) -> Iterable[z3.BoolRef]:
    for a in _fn_atoms(atoms, "log"):
        inner = a.args[1]
        for m in inner.terms:
            if len(inner.terms) == 1 and len(m) == 1 and m[0][1] == 1 and inner.terms[m] == 1:
                atom = m[0][0]
                if atom.kind == "fn" and atom.args[0] == "exp":
                    yield a.to_z3() == _arg(atom)
    for a in _fn_atoms(atoms, "exp"):
        inner = a.args[1]
        if len(inner.terms) == 1:
            ((m, c),) = inner.terms.items()
            if (
                c == 1
                and len(m) == 1
                and m[0][1] == 1
                and m[0][0].kind == "fn"
                and m[0][0].args[0] == "log"
            ):
                yield z3.Implies(_arg(m[0][0]) > 0, a.to_z3() == _arg(m[0][0]))


def _rounding(atoms: list[Atom]) -> Iterable[z3.BoolRef]:
    """round_T(x) = x for x read from a T (or narrower) tensor; round_T idempotent."""
    for a in atoms:
        if a.kind == "fn" and a.args[0].startswith("round_"):
            inner = a.args[1]
            kind = a.args[0][len("round_") :]
            mono = next(iter(inner.terms), None) if len(inner.terms) == 1 else None
            if mono and inner.terms[mono] == 1 and len(mono) == 1 and mono[0][1] == 1:
                atom = mono[0][0]
                if atom.kind == "var" and _var_dtype(atom.args[0]) in _NARROWER[kind]:
                    yield a.to_z3() == atom.to_z3()
                if atom.kind == "fn" and atom.args[0] in (f"round_{n}" for n in _NARROWER[kind]):
                    yield a.to_z3() == atom.to_z3()


_NARROWER = {"float32": ("float32", "float16"), "float16": ("float16",)}


def _var_dtype(name: str) -> str:
    """Variables are named ``name[idx]`` for float32 and ``name:dtype[idx]`` otherwise."""
    head = name.split("[", 1)[0]
    return head.split(":", 1)[1] if ":" in head else "float32"


_INT_RANGE = {
    "int8": 8,
    "int16": 16,
    "int32": 32,
    "int64": 64,
    "uint8": 8,
    "uint16": 16,
    "uint32": 32,
    "uint64": 64,
}


def _integers(atoms: list[Atom]) -> Iterable[z3.BoolRef]:
    """Variables read from integer tensors are integers within their type's range."""
    for a in atoms:
        if a.kind == "var" and _var_dtype(a.args[0]) in _INT_RANGE:
            kind = _var_dtype(a.args[0])
            bits = _INT_RANGE[kind]
            lo, hi = (
                (0, 2**bits - 1)
                if kind.startswith("u")
                else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            )
            v = a.to_z3()
            yield z3.And(z3.IsInt(v), v >= lo, v <= hi)


def _constants(atoms: list[Atom]) -> Iterable[z3.BoolRef]:
    names = {a.args[0] for a in atoms if a.kind == "var"}
    if "@pi" in names or "@sqrt2overpi" in names:
        pi = z3.Real("@pi")
        yield z3.And(pi > z3.RealVal("3.14159265"), pi < z3.RealVal("3.14159266"))
    if "@sqrt2" in names:
        r = z3.Real("@sqrt2")
        yield z3.And(r > 0, r * r == 2)
    if "@sqrt2overpi" in names:
        r = z3.Real("@sqrt2overpi")
        yield z3.And(r > 0, r * r * z3.Real("@pi") == 2)


def _rand(rng, lo=-4.0, hi=4.0) -> float:
    return float(rng.uniform(lo, hi))


F = FLOAT_FUNCTIONS
FACTS: list[Fact] = [
    Fact(
        "exp-positive",
        "exp(t) > 0",
        _per_atom("exp", lambda e, t: [e > 0]),
        lambda r: F["exp"](_rand(r)) > 0,
    ),
    Fact(
        "exp-product",
        "exp(a) * exp(b) = exp(a + b)",
        _exp_product,
        lambda r: _close(F["exp"](a := _rand(r)) * F["exp"](b := _rand(r)), F["exp"](a + b)),
    ),
    Fact(
        "exp-ratio",
        "exp(a) * exp(d) = exp(b) * exp(c) when a - b = c - d",
        _exp_ratio,
        lambda r: _close(
            F["exp"](a := _rand(r)) * F["exp"](d := _rand(r)),
            F["exp"](b := _rand(r)) * F["exp"](a - b + d),
        ),
    ),
    Fact(
        "sqrt",
        "sqrt(t) >= 0; t >= 0 -> sqrt(t)^2 = t; t > 0 -> sqrt(t) > 0",
        _per_atom("sqrt", _sqrt_facts),
        lambda r: _close(F["sqrt"](t := _rand(r, 0, 9)) ** 2, t) and F["sqrt"](t) >= 0,
    ),
    Fact(
        "sqrt-monotone",
        "0 <= a < b -> sqrt(a) < sqrt(b)",
        _sqrt_monotone,
        lambda r: F["sqrt"](a := _rand(r, 0, 4)) < F["sqrt"](a + _rand(r, 0.01, 4)),
    ),
    Fact(
        "tanh-bounds",
        "-1 < tanh(t) < 1",
        _per_atom("tanh", lambda e, t: [e > -1, e < 1]),
        lambda r: -1 < F["tanh"](_rand(r)) < 1,
    ),
    Fact(
        "tanh-odd",
        "tanh(-t) = -tanh(t)",
        _odd("tanh"),
        lambda r: _close(F["tanh"](-(t := _rand(r))), -F["tanh"](t)),
    ),
    Fact(
        "erf-bounds",
        "-1 < erf(t) < 1",
        _per_atom("erf", lambda e, t: [e > -1, e < 1]),
        lambda r: -1 < F["erf"](_rand(r)) < 1,
    ),
    Fact(
        "erf-odd",
        "erf(-t) = -erf(t)",
        _odd("erf"),
        lambda r: _close(F["erf"](-(t := _rand(r))), -F["erf"](t)),
    ),
    Fact(
        "log-exp",
        "log(exp(t)) = t; t > 0 -> exp(log(t)) = t",
        _log_exp,
        lambda r: (
            _close(F["log"](F["exp"](t := _rand(r))), t)
            and _close(F["exp"](F["log"](abs(t) + 0.1)), abs(t) + 0.1)
        ),
    ),
    Fact(
        "rounding",
        "round_T(x) = x for x of type T or narrower; round_T idempotent",
        _rounding,
        lambda r: F["round_float32"](np.float32(t := _rand(r))) == np.float32(t),
    ),
    Fact(
        "integers",
        "an integer tensor's elements are integers in its type's range",
        _integers,
        lambda r: float(np.int8(int(r.integers(-128, 128)))).is_integer(),
    ),
    Fact(
        "constants",
        "sqrt2^2 = 2, sqrt(2/pi)^2 * pi = 2, 3.14159265 < pi < 3.14159266",
        _constants,
        lambda r: _close(math.sqrt(2) ** 2, 2) and _close(math.sqrt(2 / math.pi) ** 2 * math.pi, 2),
    ),
]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def ground_facts(atoms: Iterable[Atom]) -> list[z3.BoolRef]:
    """Every fact instance over ``atoms``."""
    atoms = sorted(set(atoms), key=lambda a: a.serial)
    out: list[z3.BoolRef] = []
    for fact in FACTS:
        out.extend(fact.instantiate(atoms))
    return out
