"""Canonical symbolic scalars: polynomials over interned atoms, translated to z3 on demand.

A tensor element in a bounded proof is a :class:`Poly`: a sum of monomials with
exact rational coefficients, each monomial a product of *atoms* raised to integer
powers. Atoms are input variables, and opaque terms (``If``, uninterpreted
functions such as ``exp``, the inverse of a non-monomial divisor) whose
arguments are themselves canonical. Atoms are interned, so two computations
that are equal as polynomials produce the *same* object, and an ``If`` or an
``exp`` of two equal polynomials is one atom.

Why not hand z3 the expressions directly: z3's non-linear arithmetic gives up
(``unknown``) on identities as simple as ``relu(A @ B @ C) == relu(A @ (B @ C))``
for 3x3 matrices, because the products sit under ``If``. Normalising first
decides every polynomial identity by comparing dictionaries, keeps structurally
equal subterms shared, and leaves z3 only the case splits that remain (which it
solves quickly once the polynomial arguments are identical terms).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any

import z3

Number = int | Fraction
_SERIAL = itertools.count()
_ATOMS: dict[tuple, Atom] = {}


class Atom:
    """An interned indivisible term: ``var``, ``ite``, ``fn`` or ``inv``."""

    __slots__ = ("kind", "args", "serial", "_z3")

    def __init__(self, kind: str, args: tuple) -> None:
        self.kind = kind
        self.args = args
        self.serial = next(_SERIAL)
        self._z3: z3.ExprRef | None = None

    @staticmethod
    def make(kind: str, *args: Any) -> Atom:
        key = (kind, args)
        found = _ATOMS.get(key)
        if found is None:
            found = _ATOMS[key] = Atom(kind, args)
        return found

    def __repr__(self) -> str:
        if self.kind == "var":
            return self.args[0]
        if self.kind == "fn":
            return f"{self.args[0]}({', '.join(map(repr, self.args[1:]))})"
        if self.kind == "inv":
            return f"1/({self.args[0]!r})"
        return f"If({self.args[0]!r}, {self.args[1]!r}, {self.args[2]!r})"

    def to_z3(self) -> z3.ExprRef:
        if self._z3 is None:
            self._z3 = _atom_to_z3(self)
        return self._z3


Monomial = tuple  # tuple[(Atom, int), ...] sorted by atom serial


#: Atoms that stand for square roots of rationals (``@sqrt2``): their powers reduce, so that
#: ``x / sqrt2`` and ``x * (sqrt2 / 2)`` are one polynomial.
SQUARES: dict[str, Fraction] = {"@sqrt2": Fraction(2)}


def _mono_mul(a: Monomial, b: Monomial) -> tuple[Monomial, Fraction]:
    """The product of two monomials and the rational factor square-root powers reduced to."""
    if not a and not b:
        return (), Fraction(1)
    powers: dict[Atom, int] = dict(a)
    for atom, p in b:
        powers[atom] = powers.get(atom, 0) + p
    return _reduced(powers)


def _reduced(powers: dict[Atom, int]) -> tuple[Monomial, Fraction]:
    factor = Fraction(1)
    for atom in list(powers):
        p = powers[atom]
        if atom.kind == "var" and atom.args[0] in SQUARES and not 0 <= p <= 1:
            half, rest = divmod(p, 2)  # floor: a^-1 = a^1 * 2^-1
            factor *= SQUARES[atom.args[0]] ** half
            p = rest
            powers[atom] = p
        if not p:
            del powers[atom]
    return tuple(sorted(powers.items(), key=lambda kv: kv[0].serial)), factor


class Poly:
    """An immutable polynomial (Laurent in monomial atoms) with rational coefficients."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: dict[Monomial, Fraction]) -> None:
        self.terms = terms
        self._hash: int | None = None

    # construction ------------------------------------------------------------
    @staticmethod
    def const(value: Number | float) -> Poly:
        v = Fraction(value)
        return Poly({(): v} if v else {})

    @staticmethod
    def atom(atom: Atom) -> Poly:
        return Poly({((atom, 1),): Fraction(1)})

    @staticmethod
    def var(name: str) -> Poly:
        return Poly.atom(Atom.make("var", name))

    # queries -----------------------------------------------------------------
    @property
    def is_const(self) -> bool:
        return not self.terms or (len(self.terms) == 1 and () in self.terms)

    @property
    def value(self) -> Fraction:
        """The constant's value (0 for the zero polynomial)."""
        return self.terms.get((), Fraction(0)) if self.is_const else _raise("not a constant")

    def atoms(self) -> set[Atom]:
        """Every atom appearing, recursively through atom arguments."""
        out: set[Atom] = set()
        _collect_atoms(self, out)
        return out

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self.terms.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:  # structural identity (used for interning)
        if isinstance(other, Poly):
            return self is other or self.terms == other.terms
        return NotImplemented

    def same(self, other: Poly) -> bool:
        """Equal as canonical polynomials (a proof of equality, never of difference)."""
        return self.terms == other.terms

    # arithmetic --------------------------------------------------------------
    def __add__(self, other: Any) -> Poly:
        o = _lift(other)
        if o is None:
            return NotImplemented
        terms = dict(self.terms)
        for m, c in o.terms.items():
            s = terms.get(m, 0) + c
            if s:
                terms[m] = s
            else:
                terms.pop(m, None)
        return Poly(terms)

    __radd__ = __add__

    def __neg__(self) -> Poly:
        return Poly({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Any) -> Poly:
        o = _lift(other)
        return NotImplemented if o is None else self + (-o)

    def __rsub__(self, other: Any) -> Poly:
        o = _lift(other)
        return NotImplemented if o is None else o + (-self)

    def __mul__(self, other: Any) -> Poly:
        o = _lift(other)
        if o is None:
            return NotImplemented
        if o.is_const:
            k = o.value
            return Poly({m: c * k for m, c in self.terms.items()}) if k else Poly({})
        terms: dict[Monomial, Fraction] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in o.terms.items():
                m, f = _mono_mul(m1, m2)
                s = terms.get(m, 0) + c1 * c2 * f
                if s:
                    terms[m] = s
                else:
                    terms.pop(m, None)
        return Poly(terms)

    __rmul__ = __mul__

    def inverse(self) -> Poly:
        """``1/self``: exact for a single monomial, else an ``inv`` atom (caller adds ``!= 0``)."""
        if not self.terms:
            raise ZeroDivisionError("division by the zero polynomial")
        if len(self.terms) == 1:
            ((mono, coeff),) = self.terms.items()
            inverted, factor = _reduced({a: -p for a, p in mono})
            return Poly({inverted: factor / coeff})
        # Normalise the sign and scale so that p and -2p share one atom.
        lead = self.terms[min(self.terms, key=_mono_key)]
        base = self * (1 / lead)
        return Poly.atom(Atom.make("inv", base)) * (1 / lead)

    def __truediv__(self, other: Any) -> Poly:
        o = _lift(other)
        return NotImplemented if o is None else self * o.inverse()

    def __rtruediv__(self, other: Any) -> Poly:
        o = _lift(other)
        return NotImplemented if o is None else o * self.inverse()

    def __pow__(self, k: int) -> Poly:
        if not isinstance(k, int):
            return NotImplemented
        if k < 0:
            return self.inverse() ** (-k)
        out = Poly.const(1)
        for _ in range(k):
            out = out * self
        return out

    def as_fraction(self) -> tuple[Poly, Poly]:
        """``(numerator, denominator)`` without ``inv`` atoms or negative powers at the top level.

        ``self == numerator / denominator`` wherever every denominator factor is nonzero (the
        division obligations guarantee it), so ``a == b`` iff ``Na * Db == Nb * Da``.
        """
        dens: dict[Atom, int] = {}
        for mono in self.terms:
            for atom, p in mono:
                if atom.kind == "inv" or p < 0:
                    k = p if atom.kind == "inv" else -p
                    dens[atom] = max(dens.get(atom, 0), k)
        if not dens:
            return self, Poly.const(1)

        def factor(atom: Atom) -> Poly:
            return atom.args[0] if atom.kind == "inv" else Poly.atom(atom)

        den = Poly.const(1)
        for atom, k in dens.items():
            den = den * factor(atom) ** k
        num = Poly({})
        for mono, coeff in self.terms.items():
            term = Poly.const(coeff)
            missing = dict(dens)
            for atom, p in mono:
                if atom.kind == "inv":
                    missing[atom] -= p
                elif p < 0:
                    missing[atom] -= -p
                else:
                    term = term * Poly.atom(atom) ** p
            for atom, k in missing.items():
                if k:
                    term = term * factor(atom) ** k
            num = num + term
        return num, den

    def __repr__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda kv: _mono_key(kv[0])):
            factors = [repr(a) if p == 1 else f"{a!r}^{p}" for a, p in m]
            text = "*".join(factors)
            if not m:
                parts.append(_fmt(c))
            elif c == 1:
                parts.append(text)
            else:
                parts.append(f"{_fmt(c)}*{text}")
        return " + ".join(parts)

    def to_z3(self) -> z3.ArithRef:
        if not self.terms:
            return z3.RealVal(0)
        out = []
        for m, c in self.terms.items():
            factors = [] if c == 1 and m else [z3.RealVal(c)]
            for atom, p in m:
                base = atom.to_z3()
                for _ in range(abs(p)):
                    factors.append(base if p > 0 else 1 / base)
            out.append(factors[0] if len(factors) == 1 else z3.Product(*factors))
        return out[0] if len(out) == 1 else z3.Sum(*out)


class Cond:
    """A canonical boolean: ``gt``/``ge``/``eq`` (a poly vs 0), ``bvar``, ``not``/``and``/``or``,
    or ``const``."""

    __slots__ = ("kind", "args", "_hash")

    def __init__(self, kind: str, args: tuple) -> None:
        self.kind = kind
        self.args = args
        self._hash = hash((kind, args))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cond) and self.kind == other.kind and self.args == other.args

    def __repr__(self) -> str:
        if self.kind in ("gt", "ge", "eq"):
            return f"({self.args[0]!r} {dict(gt='>', ge='>=', eq='==')[self.kind]} 0)"
        return f"{self.kind}{self.args}"

    def to_z3(self) -> z3.BoolRef:
        k, a = self.kind, self.args
        if k == "const":
            return z3.BoolVal(a[0])
        if k == "bvar":
            return z3.Bool(a[0])
        if k == "gt":
            return a[0].to_z3() > 0
        if k == "ge":
            return a[0].to_z3() >= 0
        if k == "eq":
            return a[0].to_z3() == 0
        if k == "not":
            return z3.Not(a[0].to_z3())
        return (z3.And if k == "and" else z3.Or)(*(c.to_z3() for c in a))


def compare(kind: str, a: Any, b: Any) -> Cond | bool:
    """``a > b`` (``gt``), ``a >= b`` (``ge``) or ``a == b`` (``eq``); a bool when decided."""
    d = _lift(a) - _lift(b)
    if d.is_const:
        v = d.value
        return bool(v > 0 if kind == "gt" else v >= 0 if kind == "ge" else v == 0)
    return Cond(kind, (d,))


def ite(cond: Cond | bool, a: Any, b: Any) -> Poly:
    """``If(cond, a, b)`` as a poly (folded when the condition or branches decide it)."""
    a, b = _lift(a), _lift(b)
    if isinstance(cond, bool):
        return a if cond else b
    if a.same(b):
        return a
    if cond.kind == "not":
        cond, a, b = cond.args[0], b, a
    return Poly.atom(Atom.make("ite", cond, a, b))


def fn(name: str, *args: Any) -> Poly:
    """An uninterpreted function application."""
    return Poly.atom(Atom.make("fn", name, *(_lift(a) for a in args)))


def lift(x: Any) -> Poly:
    """A number or poly as a poly."""
    out = _lift(x)
    if out is None:
        raise TypeError(f"not a symbolic scalar: {x!r}")
    return out


def _lift(x: Any) -> Poly | None:
    if isinstance(x, Poly):
        return x
    if isinstance(x, (int, Fraction)) and not isinstance(x, bool):
        return Poly.const(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"{x} has no real value")
        return Poly.const(Fraction(x))
    return None


def _mono_key(m: Monomial) -> tuple:
    return tuple((a.serial, p) for a, p in m)


def _fmt(c: Fraction) -> str:
    return str(c.numerator) if c.denominator == 1 else f"{float(c):.6g}"


def _raise(message: str):
    raise ValueError(message)


def _collect_atoms(p: Poly, out: set[Atom]) -> None:
    for m in p.terms:
        for atom, _ in m:
            if atom in out:
                continue
            out.add(atom)
            for arg in atom.args:
                if isinstance(arg, Poly):
                    _collect_atoms(arg, out)
                elif isinstance(arg, Cond):
                    _collect_cond(arg, out)


def _collect_cond(c: Cond, out: set[Atom]) -> None:
    for arg in c.args:
        if isinstance(arg, Poly):
            _collect_atoms(arg, out)
        elif isinstance(arg, Cond):
            _collect_cond(arg, out)


_UF: dict[tuple[str, int], z3.FuncDeclRef] = {}


def uf(name: str, arity: int = 1) -> z3.FuncDeclRef:
    """The z3 function symbol of an uninterpreted real function."""
    key = (name, arity)
    if key not in _UF:
        _UF[key] = z3.Function(name, *([z3.RealSort()] * (arity + 1)))
    return _UF[key]


def _atom_to_z3(atom: Atom) -> z3.ExprRef:
    if atom.kind == "var":
        return z3.Real(atom.args[0])
    if atom.kind == "inv":
        return 1 / atom.args[0].to_z3()
    if atom.kind == "fn":
        name, *args = atom.args
        return uf(name, len(args))(*(a.to_z3() for a in args))
    cond, a, b = atom.args
    return z3.If(cond.to_z3(), a.to_z3(), b.to_z3())


#: Float values of the constant symbols (see ``arith.IRRATIONALS``).
CONSTANT_VALUES = {"@sqrt2": math.sqrt(2), "@sqrt2overpi": math.sqrt(2 / math.pi), "@pi": math.pi}


def float_value(x: Any, env: dict[str, float], functions: dict) -> Any:
    """Evaluate a poly or condition in float64: ``env`` gives variables by name, ``functions``
    the meaning of uninterpreted functions. Tests use it to check the symbolic path."""
    memo: dict[int, Any] = {}

    def atom(a: Atom) -> float:
        if id(a) in memo:
            return memo[id(a)]
        if a.kind == "var":
            name = a.args[0]
            v = CONSTANT_VALUES[name] if name in CONSTANT_VALUES else env[name]
        elif a.kind == "inv":
            v = 1.0 / poly(a.args[0])
        elif a.kind == "fn":
            v = float(functions[a.args[0]](*(poly(p) for p in a.args[1:])))
        else:
            v = poly(a.args[1]) if cond(a.args[0]) else poly(a.args[2])
        memo[id(a)] = v
        return v

    def poly(p: Poly) -> float:
        total = 0.0
        for mono, coeff in p.terms.items():
            term = float(coeff)
            for a, k in mono:
                term *= atom(a) ** k
            total += term
        return total

    def cond(c: Cond | bool) -> bool:
        if isinstance(c, bool):
            return c
        k, args = c.kind, c.args
        if k == "const":
            return bool(args[0])
        if k == "bvar":
            return bool(env[args[0]])
        if k in ("gt", "ge", "eq"):
            v = poly(args[0])
            return v > 0 if k == "gt" else v >= 0 if k == "ge" else v == 0
        if k == "not":
            return not cond(args[0])
        values = [cond(a) for a in args]
        return all(values) if k == "and" else any(values)

    if isinstance(x, Poly):
        return poly(x)
    if isinstance(x, (Cond, bool)):
        return cond(x)
    return float(x)
