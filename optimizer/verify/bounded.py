"""Bounded proofs: both sides of one rule instance, every element, for all input values.

Inputs (and constants not inspected by the rule) become arrays of symbolic
reals; both sides are evaluated with the op semantics into canonical
polynomials. Elements equal as polynomials are proved outright; the rest,
and every division's ``divisor != 0`` obligation, go to z3 as one query
``Or(lhs_i != rhs_i, divisor_j == 0)`` under the assumptions the match side's
ops grant and the ground axioms of the uninterpreted functions. ``unsat``
proves the instance; a model is a candidate counterexample, which the caller
confirms by running both sides on its values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import z3

from optimizer.ir import DType, TensorType, Value
from optimizer.verify.arith import DivisionByZero, SymArith, Unencodable
from optimizer.verify.facts import ground_facts
from optimizer.verify.instances import Instance
from optimizer.verify.semantics import evaluate
from optimizer.verify.symbolic import Atom, Cond, Poly


@dataclass
class BoundedResult:
    """``status``: proved, counterexample, unsafe (a divisor may be zero), unknown or error."""

    status: str
    detail: str = ""
    #: variable name -> concrete values (from the z3 model), for counterexamples
    values: dict[str, np.ndarray] = field(default_factory=dict)
    z3_queries: int = 0


def variable_name(var: str, dtype: DType, idx: tuple[int, ...]) -> str:
    tag = "" if dtype == DType.FLOAT else f":{dtype.name.lower()}"
    return f"{var}{tag}[{','.join(map(str, idx))}]"


def symbolic_env(inst: Instance, ar: SymArith) -> dict[Value, np.ndarray]:
    """Symbolic arrays for the instance's inputs and symbolic constants."""
    env: dict[Value, np.ndarray] = {}
    for name, value in inst.tensors.items():
        if not (value.node.is_input or name in inst.symbolic):
            continue
        t = value.type
        assert isinstance(t, TensorType)
        arr = np.empty(tuple(t.shape), dtype=object)
        for idx in np.ndindex(*arr.shape):
            label = variable_name(name, t.dtype, idx)
            if t.dtype == DType.BOOL:
                arr[idx] = ar.bool_var(label)
            elif t.dtype.is_float or t.dtype.is_integer:
                arr[idx] = ar.var(label)  # integers: a real with an integrality fact (facts.py)
            else:
                raise Unencodable(
                    f"symbolic {t.dtype.name.lower()} input {name!r} (make it a constant)"
                )
        env[value] = arr
    return env


def _to_z3(x: Any) -> z3.ExprRef:
    if isinstance(x, (Poly, Cond)):
        return x.to_z3()
    if isinstance(x, (bool, np.bool_)):
        return z3.BoolVal(bool(x))
    return z3.RealVal(x)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Poly) and isinstance(b, Poly):
        return a.same(b)
    if isinstance(a, (int, np.integer)) and isinstance(b, Poly):
        return b.is_const and b.value == a
    if isinstance(b, (int, np.integer)) and isinstance(a, Poly):
        return a.is_const and a.value == b
    return type(a) is type(b) and a == b


def _positive(p: Poly) -> bool:
    """A sufficient test for ``p > 0`` everywhere: positive coefficients over monomials that
    are positive (exp atoms, even powers, with a positive constant term), or a quadratic form
    that stays above half its constant term (exact LDL test; catches variance + eps)."""
    if not p.terms:
        return False
    simple = all(c > 0 for c in p.terms.values())
    for mono in p.terms:
        for atom, power in mono:
            if power % 2 and not _atom_positive(atom):
                simple = False
    if simple and (() in p.terms or all(all(_atom_positive(a) for a, _ in m) for m in p.terms)):
        return True
    return _quadratic_positive(p)


def _atom_positive(atom: Atom) -> bool:
    if atom.kind != "fn":
        return False
    if atom.args[0] == "exp":
        return True
    return atom.args[0] == "sqrt" and _positive(atom.args[1])


def _nonzero(p: Poly) -> bool:
    """``p != 0`` everywhere (sufficient): a constant, a monomial of nonzero atoms, or definite."""
    if p.is_const:
        return bool(p.value)
    if len(p.terms) == 1:
        ((mono, _),) = p.terms.items()
        return all(_atom_positive(a) or a.kind == "inv" for a, _ in mono)
    return _positive(p) or _positive(-p)


def _quadratic_positive(p: Poly) -> bool:
    c = p.terms.get((), Fraction(0))
    if c <= 0:
        return False
    atoms: list[Atom] = []
    for mono in p.terms:
        if sum(k for _, k in mono) > 2 or any(k < 0 for _, k in mono):
            return False
        for a, _ in mono:
            if a not in atoms:
                atoms.append(a)
    n = len(atoms) + 1
    index = {a: i for i, a in enumerate(atoms)}
    m = [[Fraction(0)] * n for _ in range(n)]
    for mono, coeff in p.terms.items():
        if not mono:
            m[n - 1][n - 1] += coeff / 2  # keep half of the constant as the margin
        elif len(mono) == 1 and mono[0][1] == 2:
            i = index[mono[0][0]]
            m[i][i] += coeff
        elif len(mono) == 1:
            i = index[mono[0][0]]
            m[i][n - 1] += coeff / 2
            m[n - 1][i] += coeff / 2
        else:
            i, j = index[mono[0][0]], index[mono[1][0]]
            m[i][j] += coeff / 2
            m[j][i] += coeff / 2
    return _psd(m)


def _psd(m: list[list[Fraction]]) -> bool:
    """Exact positive-semidefiniteness by symmetric elimination."""
    n = len(m)
    m = [row[:] for row in m]
    for k in range(n):
        pivot = m[k][k]
        if pivot < 0:
            return False
        if pivot == 0:
            if any(m[k][j] != 0 for j in range(k + 1, n)):
                return False
            continue
        for i in range(k + 1, n):
            f = m[i][k] / pivot
            if f:
                for j in range(k, n):
                    m[i][j] -= f * m[k][j]
    return True


def _discharged(cond: Cond) -> bool:
    """Obligations ``p != 0`` that hold for every value of the atoms."""
    if cond.kind == "not" and cond.args[0].kind == "eq":
        return _nonzero(cond.args[0].args[0])
    return False


def _atoms_of(items: list[Any]) -> set[Atom]:
    out: set[Atom] = set()
    for x in items:
        if isinstance(x, Poly):
            out |= x.atoms()
        elif isinstance(x, Cond):
            out |= _cond_atoms(x)
    return out


def _cond_atoms(c: Cond) -> set[Atom]:
    out: set[Atom] = set()
    for a in c.args:
        if isinstance(a, Poly):
            out |= a.atoms()
        elif isinstance(a, Cond):
            out |= _cond_atoms(a)
    return out


def prove_instance(inst: Instance, *, timeout_ms: int = 10_000) -> BoundedResult:
    """Prove that the instance's two sides agree elementwise for all symbolic values."""
    lhs_ar, rhs_ar = SymArith(mode="assume"), SymArith(mode="require")
    try:
        env = symbolic_env(inst, lhs_ar)
        lhs = evaluate(inst.lhs, env, lhs_ar)
        rhs = evaluate(inst.rhs, env, rhs_ar)
    except DivisionByZero as exc:
        return BoundedResult("unsafe", str(exc))
    except Unencodable as exc:
        return BoundedResult("error", f"cannot encode: {exc}")
    except (ValueError, IndexError) as exc:  # numpy refused the shapes: not a valid instance
        return BoundedResult("invalid", f"{type(exc).__name__}: {exc}")
    diffs: list[tuple[int, tuple, Any, Any]] = []
    for k, (a, b) in enumerate(zip(lhs, rhs, strict=False)):
        if a.shape != b.shape:
            return BoundedResult("counterexample", f"output {k} has shape {a.shape} vs {b.shape}")
        for idx in np.ndindex(*a.shape):
            if not _same(a[idx], b[idx]):
                diffs.append((k, idx, a[idx], b[idx]))
    obligations = [
        (why, c) for why, c in lhs_ar.obligations + rhs_ar.obligations if not _discharged(c)
    ]
    if not diffs and not obligations:
        return BoundedResult("proved", "equal as polynomials")
    # One query per element and per divisor: ``Or`` of all is unsat exactly when each is, and
    # small queries (with only their own atoms' axioms) are what z3 decides quickly.
    goals: list[tuple[str, Any, list[Any]]] = []
    for k, idx, a, b in diffs:
        goals.append((f"output {k}{list(idx)}", _difference(a, b), [a, b]))
    for why, cond in obligations:
        goals.append((why, z3.Not(cond.to_z3()), [cond]))
    assumed = [cond.to_z3() for cond in lhs_ar.assumptions]
    assumed_atoms = _atoms_of(list(lhs_ar.assumptions))
    deadline = time.monotonic() + 3 * timeout_ms / 1000  # all queries of one instance together
    for queries, (label, goal, items) in enumerate(goals, start=1):
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return BoundedResult("unknown", f"z3 time budget spent at {label}", z3_queries=queries)
        solver = z3.Solver()
        solver.set("timeout", min(int(timeout_ms), left_ms))
        solver.add(*ground_facts(_atoms_of(items) | assumed_atoms), *assumed)
        solver.add(goal)
        verdict = solver.check()
        if verdict == z3.unsat:
            continue
        if verdict == z3.unknown:
            return BoundedResult(
                "unknown", f"z3 at {label}: {solver.reason_unknown()}", z3_queries=queries
            )
        values = model_values(inst, solver.model())
        if label.startswith("output "):
            return BoundedResult("counterexample", f"z3 model differs at {label}", values, queries)
        return BoundedResult("unsafe", label, values, queries)
    return BoundedResult(
        "proved", f"z3 ({len(diffs)} elements, {len(obligations)} divisors)", z3_queries=len(goals)
    )


def _difference(a: Any, b: Any) -> z3.BoolRef:
    """``a != b`` for z3, with denominators cleared (z3 copes far better without division)."""
    if isinstance(a, Poly) or isinstance(b, Poly):
        from optimizer.verify.symbolic import lift

        na, da = lift(a).as_fraction()
        nb, db = lift(b).as_fraction()
        return (na * db - nb * da).to_z3() != 0
    return _to_z3(a) != _to_z3(b)


def model_values(inst: Instance, model: z3.ModelRef) -> dict[str, np.ndarray]:
    """Concrete arrays for the instance's symbolic variables from a z3 model."""
    out: dict[str, np.ndarray] = {}
    for name, value in inst.tensors.items():
        if not (value.node.is_input or name in inst.symbolic):
            continue
        t = value.type
        arr = np.zeros(tuple(t.shape), dtype=t.dtype.to_numpy())
        for idx in np.ndindex(*arr.shape):
            label = variable_name(name, t.dtype, idx)
            if t.dtype == DType.BOOL:
                arr[idx] = z3.is_true(model.eval(z3.Bool(label), model_completion=True))
            elif t.dtype.is_integer:
                arr[idx] = round(_real(model.eval(z3.Real(label), model_completion=True)))
            else:
                arr[idx] = _real(model.eval(z3.Real(label), model_completion=True))
        out[name] = arr
    return out


def _real(v: z3.ExprRef) -> float:
    if z3.is_rational_value(v):
        return v.numerator_as_long() / v.denominator_as_long()
    if z3.is_algebraic_value(v):
        return float(v.approx(12).as_decimal(12).rstrip("?"))
    return 0.0
