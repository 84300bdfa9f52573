"""Scalar arithmetic back ends for the op semantics: symbolic (proofs) and float (checks).

The op semantics in :mod:`optimizer.verify.semantics` are written once, over
numpy object arrays whose elements are scalars of an *arith*: plain Python
operators for ``+ - *``, and the methods below for everything else. The
symbolic back end builds canonical polynomials (:mod:`optimizer.verify.symbolic`)
and records side conditions; the float back end computes in float64, so the
same code can be compared with onnxruntime on concrete numbers.

Side conditions. Real arithmetic cannot express IEEE's ``x/0``, so every
division records an *obligation* ``divisor != 0`` that the prover must
discharge. A few ops define their inputs' domain (a BatchNormalization
variance is non-negative): on the rule's match side, the original graph,
such facts are *assumed*; on the rewrite side they become obligations too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from optimizer.verify.symbolic import Cond, Poly, compare, fn, ite, lift

#: float32 roundings of irrational constants that rules write as literals, and their symbols.
#: A literal equal to one of them is read as the exact constant (see docs/verification.md).
_F32 = lambda x: float(np.float32(x))  # noqa: E731
IRRATIONALS: dict[float, tuple[str, float]] = {
    _F32(math.sqrt(2)): ("@sqrt2", 1.0),
    _F32(1 / math.sqrt(2)): ("@sqrt2", 0.5),
    _F32(math.sqrt(2 / math.pi)): ("@sqrt2overpi", 1.0),
    _F32(math.pi): ("@pi", 1.0),
}


class Unencodable(ValueError):
    """A value or op has no encoding in the symbolic semantics (NaN, inf, unsupported op)."""


class DivisionByZero(ValueError):
    """A divisor is identically zero."""


@dataclass
class SymArith:
    """Symbolic scalars: :class:`Poly` values, :class:`Cond` booleans, recorded side conditions.

    ``mode`` is ``"assume"`` while evaluating a rule's match side and ``"require"``
    on its rewrite side.
    """

    mode: str = "assume"
    assumptions: list[Cond] = field(default_factory=list)
    obligations: list[tuple[str, Cond]] = field(default_factory=list)
    symbolic = True

    # values
    def const(self, v: Any) -> Poly:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)  # type: ignore[return-value]
        f = float(v)
        if not math.isfinite(f):
            raise Unencodable(f"constant {f} has no real value")
        if isinstance(v, (np.floating, float)) and f in IRRATIONALS:
            name, scale = IRRATIONALS[f]
            return Poly.var(name) * Fraction(scale)
        return Poly.const(Fraction(f) if not float(f).is_integer() else int(f))

    def var(self, name: str) -> Poly:
        return Poly.var(name)

    def bool_var(self, name: str) -> Cond:
        return Cond("bvar", (name,))

    # comparisons and logic
    def gt(self, a, b):
        return compare("gt", a, b)

    def ge(self, a, b):
        return compare("ge", a, b)

    def lt(self, a, b):
        return compare("gt", b, a)

    def le(self, a, b):
        return compare("ge", b, a)

    def eq(self, a, b):
        if isinstance(a, (bool, Cond)) or isinstance(b, (bool, Cond)):
            return self.or_(self.and_(a, b), self.and_(self.not_(a), self.not_(b)))
        return compare("eq", a, b)

    def not_(self, c):
        if isinstance(c, bool):
            return not c
        return c.args[0] if c.kind == "not" else Cond("not", (c,))

    def and_(self, a, b):
        if isinstance(a, bool):
            return b if a else False
        if isinstance(b, bool):
            return a if b else False
        return Cond("and", (a, b))

    def or_(self, a, b):
        if isinstance(a, bool):
            return True if a else b
        if isinstance(b, bool):
            return True if b else a
        return Cond("or", (a, b))

    def ite(self, c, a, b):
        if isinstance(a, (bool, Cond)) or isinstance(b, (bool, Cond)):
            return self.or_(self.and_(c, a), self.and_(self.not_(c), b))
        return ite(c, a, b)

    # arithmetic
    def div(self, a, b):
        b = lift(b)
        if not b.terms:
            raise DivisionByZero("division by zero")
        if not b.is_const:
            self.require(self.not_(compare("eq", b, 0)), f"divisor {b!r} may be zero")
        return lift(a) / b

    def max(self, a, b):
        return self.ite(self.ge(a, b), a, b)

    def min(self, a, b):
        return self.ite(self.le(a, b), a, b)

    def abs(self, a):
        return self.ite(self.ge(a, 0), a, -lift(a))

    def relu(self, a):
        return self.ite(self.gt(a, 0), a, 0)

    def func(self, name: str, *args):
        """An uninterpreted function, with the few exact evaluations it has at constants."""
        xs = [lift(a) for a in args]
        if all(x.is_const for x in xs):
            exact = _exact(name, [x.value for x in xs])
            if exact is not None:
                return exact
        return fn(name, *xs)

    def sqrt(self, a):
        return self.func("sqrt", a)

    def exp(self, a):
        return self.func("exp", a)

    # side conditions
    def assume(self, cond, why: str = "") -> None:
        """A fact the op's definition grants (match side) or demands (rewrite side)."""
        if self.mode == "assume":
            if not isinstance(cond, bool):
                self.assumptions.append(cond)
        else:
            self.require(cond, why)

    def require(self, cond, why: str) -> None:
        if cond is True:
            return
        if cond is False:
            raise DivisionByZero(why)
        self.obligations.append((why, cond))


def _exact(name: str, args: list[Fraction]) -> Poly | None:
    if name == "sqrt":
        (x,) = args
        if x >= 0:
            n, d = math.isqrt(x.numerator), math.isqrt(x.denominator)
            if n * n == x.numerator and d * d == x.denominator:
                return Poly.const(Fraction(n, d))
    if name in ("exp", "erf", "tanh") and args[0] == 0:
        return Poly.const(1 if name == "exp" else 0)
    if name == "log" and args[0] == 1:
        return Poly.const(0)
    return None


class FloatArith:
    """Concrete float64 scalars with the same interface (for tests and counterexamples)."""

    symbolic = False
    mode = "assume"

    def const(self, v):
        return bool(v) if isinstance(v, (bool, np.bool_)) else np.float64(v)

    def gt(self, a, b):
        return bool(a > b)

    def ge(self, a, b):
        return bool(a >= b)

    def lt(self, a, b):
        return bool(a < b)

    def le(self, a, b):
        return bool(a <= b)

    def eq(self, a, b):
        return bool(a == b)

    def not_(self, c):
        return not c

    def and_(self, a, b):
        return bool(a and b)

    def or_(self, a, b):
        return bool(a or b)

    def ite(self, c, a, b):
        return a if c else b

    def div(self, a, b):
        with np.errstate(all="ignore"):
            return np.float64(a) / np.float64(b)

    def max(self, a, b):
        return a if a >= b else b

    def min(self, a, b):
        return a if a <= b else b

    def abs(self, a):
        return abs(a)

    def relu(self, a):
        return a if a > 0 else np.float64(0)

    def func(self, name: str, *args):
        return FLOAT_FUNCTIONS[name](*(np.float64(a) for a in args))

    def sqrt(self, a):
        return self.func("sqrt", a)

    def exp(self, a):
        return self.func("exp", a)

    def assume(self, cond, why: str = "") -> None:
        pass

    def require(self, cond, why: str) -> None:
        pass


def _erf(x):
    return np.float64(math.erf(x))


def _cast_int(name: str):
    return lambda x: np.float64(np.asarray(np.trunc(x)).astype(name))


def _round_to(dtype):
    return lambda x: np.float64(np.asarray(x).astype(dtype))


#: Float meaning of every uninterpreted function name the semantics use.
FLOAT_FUNCTIONS = {
    "sqrt": lambda x: np.sqrt(x) if x >= 0 else np.float64("nan"),
    "exp": np.exp,
    "log": lambda x: np.log(x) if x > 0 else (np.float64("-inf") if x == 0 else np.float64("nan")),
    "tanh": np.tanh,
    "erf": _erf,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,
    "sin": np.sin,
    "cos": np.cos,
    "pow": lambda a, b: np.power(a, b),
    "round_float16": _round_to(np.float16),
    "round_float32": _round_to(np.float32),
    "round_float64": _round_to(np.float64),
    **{
        f"cast_to_{t}": _cast_int(t)
        for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    },
}
