"""Sampling one instance of a rule: shapes, attribute values and constants, guided by the ops.

:func:`analyse` reads a rule once (literals and wildcards renamed to variables, which
variables the ``where`` clause inspects, hints for ranks and values); a :class:`Sampler`
walks the match bottom-up and proposes each variable's type from the op that reads it
(a MatMul operand gets a matching inner dimension, a Conv weight the input's channels, a
Reshape target the input's element count, an axis a value in range). Failures raise
:class:`Retry` and the caller draws again.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimizer.ir import REGISTRY, DType, TensorData, TensorType, Value, constant, graph_input
from optimizer.rewrite.expr import RuleEvalError, build_node, evaluate
from optimizer.rewrite.rule import AttrExpr, AttrVar, Build, Literal, Op, Pattern, Rule, Var

_ELEMENTWISE_BOOL = {"And", "Or", "Xor", "Not"}
_INT_ROLES = {
    ("Reshape", 1): "reshape",
    ("Expand", 1): "expand",
    ("Tile", 1): "tile",
    ("Squeeze", 1): "squeeze",
    ("Unsqueeze", 1): "unsqueeze",
    ("Split", 1): "split",
    ("Slice", 1): "slice",
    ("Slice", 2): "slice",
    ("Slice", 3): "slice",
    ("Slice", 4): "slice",
    ("Gather", 1): "indices",
    ("Pad", 1): "pads",
    **{(f"Reduce{k}", 1): "axes" for k in ("Sum", "Mean", "Max", "Min", "Prod", "SumSquare", "L2")},
}


@dataclass
# ---------------------------------------------------------------- rule analysis


@dataclass
class RuleShape:
    """What sampling needs to know about a rule, computed once."""

    rule: Rule
    match: tuple[Pattern, ...]
    literals: dict[str, float]
    variables: list[str]
    inspected: set[str]
    const_hint: set[str]
    where_literals: list[Any]
    arity: dict[int, int] = field(default_factory=dict)
    #: values a variable is compared with by ``all_equal`` in the where clause
    var_hints: dict[str, list[float]] = field(default_factory=dict)
    #: ranks the where clause demands (``rank(x) == 2``)
    rank_hints: dict[str, int] = field(default_factory=dict)


def analyse(rule: Rule) -> RuleShape:
    """Rename literals and ``_`` to fresh variables and find which variables are inspected."""
    literals: dict[str, float] = {}
    counter = itertools.count()

    def rename(p: Pattern) -> Pattern:
        if isinstance(p, Literal):
            name = f"lit{next(counter)}_"
            literals[name] = p.value
            return Var(name)
        if isinstance(p, Var) and p.name == "_":
            return Var(f"any{next(counter)}_")
        if isinstance(p, Op):
            return Op(p.op, tuple(rename(a) for a in p.args), p.attrs, p.domain, p.index, p.call)
        return p

    # Rename once per call site so that the outputs of one multi-output call agree.
    by_call: dict[int, Op] = {}

    def rename_shared(p: Pattern) -> Pattern:
        if isinstance(p, Op):
            key = p.call
            if key not in by_call:
                by_call[key] = rename(p)  # type: ignore[assignment]
            base = by_call[key]
            return Op(base.op, base.args, base.attrs, base.domain, p.index, p.call)
        return rename(p)

    match = tuple(rename_shared(p) for p in rule.match)
    variables: list[str] = []

    def walk(p: Pattern) -> None:
        if isinstance(p, Var) and p.name not in variables:
            variables.append(p.name)
        elif isinstance(p, Op):
            for a in p.args:
                walk(a)

    for root in match:
        walk(root)
    trees: list[ast.AST] = [rule.where.tree] if rule.where is not None else []
    for p in _all_patterns(rule.rewrite):
        if isinstance(p, Build):
            trees.append(p.tree)
        if isinstance(p, Op):
            trees.extend(a.tree for _, a in p.attrs if isinstance(a, AttrExpr))
    inspected, const_hint = set(), set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
                first = node.args[0]
                if isinstance(first, ast.Name):
                    if node.func.id in ("value", "all_equal"):
                        inspected.add(first.id)
                    if node.func.id in ("is_const", "value", "all_equal", "is_scalar_like"):
                        const_hint.add(first.id)
    where_literals, var_hints, rank_hints = _where_hints(rule.where.tree if rule.where else None)
    inspected |= set(literals)
    const_hint |= set(literals)
    shape = RuleShape(
        rule,
        match,
        literals,
        variables,
        inspected,
        const_hint,
        where_literals,
        var_hints=var_hints,
        rank_hints=rank_hints,
    )
    for p in _all_patterns(match):
        if isinstance(p, Op):
            shape.arity[p.call] = max(shape.arity.get(p.call, 1), p.index + 1)
    return shape


_NOT_LITERAL = object()


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return _NOT_LITERAL


def _call_of(node: ast.AST, name: str, arity: int) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == name
        and len(node.args) == arity
        and isinstance(node.args[0], ast.Name)
    )


def _where_hints(tree: ast.expr | None) -> tuple[list, dict[str, list[float]], dict[str, int]]:
    """Literals of a where clause (candidate attribute values), values ``all_equal`` asks of a
    variable, and ranks ``rank(x) == k`` demands."""
    literals: list[Any] = []
    values: dict[str, list[float]] = {}
    ranks: dict[str, int] = {}
    if tree is None:
        return literals, values, ranks
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple, ast.Constant, ast.UnaryOp)):
            lit = _literal(node)
            if lit is not _NOT_LITERAL and isinstance(lit, (int, float, str, list, tuple)):
                literals.append(list(lit) if isinstance(lit, tuple) else lit)
        if _call_of(node, "all_equal", 2):
            lit = _literal(node.args[1])
            if isinstance(lit, (int, float)):
                values.setdefault(node.args[0].id, []).append(float(lit))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
            for left, right in ((node.left, node.comparators[0]), (node.comparators[0], node.left)):
                lit = _literal(right)
                if _call_of(left, "rank", 1) and isinstance(lit, int):
                    ranks[left.args[0].id] = lit
    return literals, values, ranks


def _all_patterns(roots) -> list[Pattern]:
    out: list[Pattern] = []
    stack = list(roots)
    while stack:
        p = stack.pop()
        out.append(p)
        if isinstance(p, Op):
            stack.extend(p.args)
    return out


# ---------------------------------------------------------------- sampling


_STRING_ATTRS = frozenset({"auto_pad", "mode", "approximate"})
#: Attributes whose absence means something (default perm, no padding ...): sometimes left out.
_OPTIONAL = frozenset(
    {"perm", "pads", "strides", "dilations", "kernel_shape", "axes", "split", "min", "max"}
)


class Retry(Exception):
    """This sample cannot be completed; draw another."""


class Sampler:
    """One attempt at an instance: assigns variables while walking the match bottom-up."""

    def __init__(self, shape: RuleShape, rng: np.random.Generator, opset: int) -> None:
        self.s = shape
        self.rng = rng
        self.opset = opset
        self.types: dict[str, TensorType] = {}
        self.data: dict[str, np.ndarray] = {}
        self.attrs: dict[str, Any] = {}
        self.nodes: dict[int, Any] = {}
        self.const: set[str] = set()

    # random helpers
    def pick(self, seq):
        seq = list(seq)
        return seq[int(self.rng.integers(len(seq)))]

    def dim(self) -> int:
        return self.pick((1, 2, 2, 3, 3))

    def shape(self, lo: int = 0, hi: int = 4) -> tuple[int, ...]:
        r = self.pick(range(lo, hi + 1))
        return tuple(self.dim() for _ in range(r))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def attr(self, pattern: Op, name: str, choose) -> Any:
        """Attribute ``name`` of ``pattern``: a literal, a bound variable, or chosen now."""
        for key, a in pattern.attrs:
            if key != name:
                continue
            if isinstance(a, AttrExpr):
                return evaluate(a.tree, {})
            if a.name not in self.attrs:
                hinted = [v for v in self.s.where_literals if _fits(v, name)]
                optional = REGISTRY.default_of(pattern.domain, pattern.op, self.opset, name) is None
                if hinted and self.chance(0.3):
                    self.attrs[a.name] = self.pick(hinted)
                elif optional and name in _OPTIONAL and self.chance(0.3):
                    self.attrs[a.name] = None  # the attribute is absent
                else:
                    self.attrs[a.name] = choose()
            return self.attrs[a.name]
        return None

    # the walk
    def value(self, p: Pattern) -> Value:
        if isinstance(p, Var):
            if p.name not in self.types:
                r = self.s.rank_hints.get(p.name)
                self.assign(
                    p.name, TensorType(DType.FLOAT, self.shape() if r is None else self.shape(r, r))
                )
            return self.make(p.name)
        assert isinstance(p, Op)
        if p.call in self.nodes:
            return self.nodes[p.call].outputs[p.index]
        for pos, a in enumerate(p.args):
            # A variable reached through shape-preserving ops (Relu(x), Mul(x, s) ...) gets its
            # shape from this op's proposal, so Concat(Relu(x), Relu(y)) samples compatible x, y.
            leaf = a.name if isinstance(a, Var) else _transparent_leaf(a)
            if leaf is not None and leaf not in self.types:
                known = [self.known(b) for b in p.args]
                t, data = self.propose(p, pos, known)
                t = self.ranked(leaf, t, data, p.op)
                if isinstance(a, Op) and (data is not None or not t.dtype.is_float):
                    t, data = TensorType(DType.FLOAT, t.shape), None
                self.assign(leaf, t, data)
            if isinstance(a, Op):
                self.value(a)
        inputs = [self.value(a) for a in p.args]
        self.generic_attrs(p, inputs)
        attrs = {}
        for key, a in p.attrs:
            v = self.attrs[a.name] if isinstance(a, AttrVar) else evaluate(a.tree, {})
            if v is not None:
                attrs[key] = v
        try:
            node = build_node(
                p.op,
                inputs,
                attrs,
                domain=p.domain,
                num_outputs=self.s.arity[p.call],
                opset=self.opset,
            )
        except (
            RuleEvalError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            ZeroDivisionError,
        ) as exc:
            raise Retry(str(exc)) from None
        self.nodes[p.call] = node
        return node.outputs[p.index]

    def ranked(self, name: str, t: TensorType, data, op: str) -> TensorType:
        """``t`` adjusted to the rank the where clause demands of ``name`` (for free proposals)."""
        r = self.s.rank_hints.get(name)
        if (
            r is None
            or data is not None
            or len(t.shape) == r
            or op not in _TRANSPARENT | {"Concat"}
        ):
            return t
        shape = tuple(t.shape)
        shape = (
            shape[len(shape) - r :]
            if len(shape) > r
            else tuple(self.dim() for _ in range(r - len(shape))) + shape
        )
        return TensorType(t.dtype, shape)

    def known(self, p: Pattern) -> TensorType | None:
        if isinstance(p, Var):
            return self.types.get(p.name)
        if isinstance(p, Op) and p.call in self.nodes:
            t = self.nodes[p.call].outputs[p.index].type
            static = (
                isinstance(t, TensorType)
                and t.shape is not None
                and all(isinstance(d, int) for d in t.shape)
            )
            return t if static else None
        return None

    def assign(self, name: str, t: TensorType, data: np.ndarray | None = None) -> None:
        self.types[name] = t
        if name in self.s.literals:
            data = np.full(t.shape, self.s.literals[name], dtype=t.dtype.to_numpy())
        if data is not None:
            self.data[name] = np.asarray(data, dtype=t.dtype.to_numpy())
            self.const.add(name)
        elif name in self.s.const_hint and not self.chance(0.1):
            self.const.add(name)
            if name in self.s.inspected:
                hints = self.s.var_hints.get(name)
                if hints and self.chance(0.85):
                    self.data[name] = np.full(tuple(t.shape), self.pick(hints))
                else:
                    self.data[name] = self.float_values(t)

    def float_values(self, t: TensorType) -> np.ndarray:
        shape = tuple(t.shape)
        kind = self.pick(("normal", "normal", "positive", "hint", "one", "int"))
        hints = [v for v in self.s.where_literals if isinstance(v, (int, float))]
        if kind == "hint" and hints:
            return np.full(shape, float(self.pick(hints)))
        if kind == "one":
            return np.full(shape, self.pick((1.0, 0.0, -1.0, 2.0, 0.5)))
        if kind == "int":
            return self.rng.integers(-3, 4, size=shape).astype(float)
        values = self.rng.standard_normal(shape)
        return np.abs(values) + 0.25 if kind == "positive" else values

    def make(self, name: str) -> Value:
        t = self.types[name]
        if name in self.const:
            data = self.data.get(name)
            if data is None:  # symbolic in proofs: random data, distinct per variable
                data = (
                    self.rng.standard_normal(t.shape)
                    if t.dtype.is_float
                    else self.rng.integers(0, 2, t.shape)
                )
            self.data[name] = data = np.asarray(data, dtype=t.dtype.to_numpy())
            return constant(TensorData.from_array(data, t.dtype))
        return graph_input(name, t)

    # proposals ---------------------------------------------------------------
    def propose(self, p: Op, pos: int, known: list) -> tuple[TensorType, np.ndarray | None]:
        if p.op == "Dropout" and pos > 0:  # ratio in [0, 1), training_mode false: inference
            if pos == 1:
                return TensorType(DType.FLOAT, ()), np.array(self.pick((0.0, 0.5)), np.float32)
            return TensorType(DType.BOOL, ()), np.array(False)
        role = _INT_ROLES.get((p.op, pos))
        x = known[0]
        if role is not None:
            if x is None:
                raise Retry("int input before its data operand")
            return self.int_input(role, p, pos, x)
        method = getattr(self, f"propose_{p.op}", None)
        if method is not None:
            try:
                t = method(p, pos, known)
            except (IndexError, ValueError, ZeroDivisionError, TypeError) as exc:
                raise Retry(f"proposal failed: {exc}") from None
            if t is not None:
                return t, None
        return self.elementwise(p, pos, known), None

    def elementwise(self, p: Op, pos: int, known: list) -> TensorType:
        dtype = (
            DType.BOOL
            if p.op in _ELEMENTWISE_BOOL or (p.op == "Where" and pos == 0)
            else DType.FLOAT
        )
        ref = next((k for k in known if k is not None), None)
        if ref is None:
            return TensorType(dtype, self.shape())
        s = tuple(ref.shape)
        choice = self.rng.random()
        if choice < 0.5 or not s:
            shape = s
        elif choice < 0.65:
            shape = s[self.pick(range(1, len(s) + 1)) :]
        elif choice < 0.8:
            shape = tuple(1 if self.chance(0.5) else d for d in s)
        elif choice < 0.9:
            shape = ()
        else:
            shape = (1,) * self.pick(range(1, len(s) + 1))
        return TensorType(dtype, shape)

    def propose_MatMul(self, p, pos, known):
        a, b = known[0], known[1]
        if pos == 0 and b is None:
            return TensorType(DType.FLOAT, self.shape(1, 4))
        if pos == 1 and a is not None:
            sa = tuple(a.shape)
            k = sa[-1]
            r = self.pick((1, 2, 2, len(sa)))
            if r == 1:
                return TensorType(DType.FLOAT, (k,))
            batch = tuple(self.pick((1, d)) for d in sa[:-2])[len(sa) - r :] if r > 2 else ()
            batch = batch + (self.dim(),) * max(0, r - 2 - len(batch))
            return TensorType(DType.FLOAT, batch + (k, self.dim()))
        if pos == 0 and b is not None:
            sb = tuple(b.shape)
            k = sb[-2] if len(sb) >= 2 else sb[0]
            lead = tuple(self.dim() for _ in range(self.pick((0, 1, 1, 2))))
            return TensorType(DType.FLOAT, lead + (k,) if not lead else lead + (k,))
        return None

    def propose_Gemm(self, p, pos, known):
        ta = self.attr(p, "transA", lambda: self.pick((0, 1))) or 0
        tb = self.attr(p, "transB", lambda: self.pick((0, 1))) or 0
        a, b = known[0], known[1]
        if pos == 0:
            if b is not None:
                k = b.shape[1] if tb else b.shape[0]
                m = self.dim()
                return TensorType(DType.FLOAT, (k, m) if ta else (m, k))
            return TensorType(DType.FLOAT, (self.dim(), self.dim()))
        if pos == 1 and a is not None:
            k = a.shape[0] if ta else a.shape[1]
            n = self.dim()
            return TensorType(DType.FLOAT, (n, k) if tb else (k, n))
        if pos == 2 and a is not None and b is not None:
            m = a.shape[1] if ta else a.shape[0]
            n = b.shape[0] if tb else b.shape[1]
            return TensorType(DType.FLOAT, self.pick(((n,), (m, n), (1, n), (m, 1), ())))
        return None

    def propose_Conv(self, p, pos, known):
        group = self.attr(p, "group", lambda: self.pick((1, 1, 2))) or 1
        x, w = known[0], known[1]
        if pos == 0:
            if w is not None:
                n_sp = len(w.shape) - 2
                c = w.shape[1] * group
                sp = tuple(max(k, self.pick((2, 3, 4))) for k in w.shape[2:])
            else:
                n_sp = self.pick((1, 2, 2))
                c = group * self.pick((1, 2))
                sp = tuple(self.pick((2, 3, 4)) for _ in range(n_sp))
            return TensorType(DType.FLOAT, (self.pick((1, 2)), c) + sp)
        if pos == 1 and x is not None:
            n_sp = len(x.shape) - 2
            if x.shape[1] % group:
                raise Retry("channels not divisible by group")
            self.attr(p, "strides", lambda: [self.pick((1, 1, 2))] * n_sp)
            self.attr(p, "dilations", lambda: [1] * n_sp)
            auto = self.attr(
                p,
                "auto_pad",
                lambda: self.pick(("NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "VALID")),
            )
            explicit = auto in (None, "NOTSET", b"NOTSET")
            pads = self.attr(
                p, "pads", lambda: [self.pick((0, 0, 1))] * (2 * n_sp) if explicit else None
            )
            pads = pads or [0] * (2 * n_sp)
            kernel = [
                self.pick([k for k in (1, 2, 3) if k <= size + pads[i] + pads[i + n_sp]])
                for i, size in enumerate(x.shape[2:])
            ]
            given = self.attr(p, "kernel_shape", lambda: list(kernel))
            kernel = list(given) if given else kernel
            m = group * self.pick((1, 2))
            return TensorType(DType.FLOAT, (m, x.shape[1] // group) + tuple(kernel))
        if pos == 2 and w is not None:
            return TensorType(DType.FLOAT, (w.shape[0],))
        return None

    def _pool(self, p, pos, known):
        if pos != 0:
            return None
        n_sp = self.pick((1, 2, 2))
        return TensorType(
            DType.FLOAT,
            (self.pick((1, 2)), self.dim()) + tuple(self.pick((2, 3, 4)) for _ in range(n_sp)),
        )

    propose_MaxPool = propose_AveragePool = _pool

    def propose_GlobalAveragePool(self, p, pos, known):
        return TensorType(DType.FLOAT, (self.pick((1, 2)), self.dim()) + self.shape(1, 2))

    propose_GlobalMaxPool = propose_GlobalAveragePool

    def propose_BatchNormalization(self, p, pos, known):
        x = known[0]
        if pos == 0:
            return TensorType(DType.FLOAT, (self.pick((1, 2)), self.dim()) + self.shape(0, 2))
        return TensorType(DType.FLOAT, (x.shape[1],)) if x is not None else None

    propose_InstanceNormalization = propose_BatchNormalization

    def propose_LayerNormalization(self, p, pos, known):
        x = known[0]
        if pos == 0:
            return TensorType(DType.FLOAT, self.shape(1, 4))
        if x is None:
            return None
        r = len(x.shape)
        axis = self.attr(p, "axis", lambda: self.pick(range(-r, r)))
        axis = -1 if axis is None else axis
        return TensorType(DType.FLOAT, tuple(x.shape)[axis % r :])

    def propose_Concat(self, p, pos, known):
        first = next((k for k in known if k is not None), None)
        if first is None:
            return TensorType(DType.FLOAT, self.shape(1, 4))
        r = len(first.shape)
        if r == 0:
            raise Retry("Concat of a scalar")
        axis = self.attr(p, "axis", lambda: self.pick(range(-r, r))) % r
        shape = list(first.shape)
        shape[axis] = self.dim()
        return TensorType(DType.FLOAT, tuple(shape))

    def propose_Split(self, p, pos, known):
        if pos != 0:
            return None
        n = self.s.arity[p.call]
        shape = list(self.shape(1, 4))
        r = len(shape)
        axis = self.attr(p, "axis", lambda: self.pick(range(-r, r)))
        axis = 0 if axis is None else axis % r
        shape[axis] = n + self.pick((0, 1, 2)) if n > 1 else shape[axis]
        return TensorType(DType.FLOAT, tuple(shape))

    def propose_Squeeze(self, p, pos, known):
        if pos != 0:
            return None
        shape = [self.pick((1, 1, 2, 3)) for _ in range(self.pick((1, 2, 3, 4)))]
        if 1 not in shape:
            shape[self.pick(range(len(shape)))] = 1
        return TensorType(DType.FLOAT, tuple(shape))

    def propose_Clip(self, p, pos, known):
        return TensorType(DType.FLOAT, ()) if pos > 0 else None

    def propose_Cast(self, p, pos, known):
        return TensorType(
            self.pick((DType.FLOAT, DType.FLOAT, DType.DOUBLE, DType.INT32)), self.shape()
        )

    def int_input(self, role: str, p: Op, pos: int, x: TensorType) -> tuple[TensorType, np.ndarray]:
        s = tuple(x.shape)
        r = len(s)
        if role == "reshape":
            if s and self.chance(0.3):
                values = [int(d) for d in self.rng.permutation(np.array(s, dtype=np.int64))]
            else:
                values = _factorization(int(np.prod(s)), self.pick((1, 2, 3, 4)), self.rng)
            if values and self.chance(0.3):
                values[self.pick(range(len(values)))] = -1
            for i in range(min(r, len(values))):
                if values[i] == s[i] and self.chance(0.2):
                    values[i] = 0
        elif role == "expand":
            grown = [self.pick((d, 2, 3)) if d == 1 else d for d in s]
            values = [self.dim() for _ in range(self.pick((0, 0, 1)))] + grown
        elif role == "tile":
            values = [self.pick((1, 2)) for _ in s]
        elif role == "squeeze":
            ones = [i for i, d in enumerate(s) if d == 1]
            if not ones:
                raise Retry("nothing to squeeze")
            chosen = sorted(set(self.pick(ones) for _ in range(self.pick((1, 2)))))
            values = [i - r if self.chance(0.3) else i for i in chosen]
        elif role == "unsqueeze":
            k = self.pick((1, 1, 2))
            values = sorted(self.rng.choice(r + k, size=k, replace=False).tolist())
        elif role == "axes":
            if r == 0:
                raise Retry("reduction of a scalar")
            k = self.pick(range(1, r + 1))
            values = sorted(self.rng.choice(r, size=k, replace=False).tolist())
        elif role == "split":
            axis = (self.attr(p, "axis", lambda: 0) or 0) % max(r, 1)
            n = self.s.arity[p.call]
            total = s[axis] if r else 0
            if total < n:
                raise Retry("split axis too short")
            cuts = (
                sorted(self.rng.choice(range(1, total), size=n - 1, replace=False).tolist())
                if n > 1
                else []
            )
            values = [b - a for a, b in zip([0] + cuts, cuts + [total], strict=False)]
        elif role == "indices":
            axis = (self.attr(p, "axis", lambda: 0) or 0) % max(r, 1)
            shape = self.shape(0, 2)
            data = self.rng.integers(-s[axis], s[axis], size=shape) if r else None
            if data is None:
                raise Retry("gather from a scalar")
            return TensorType(DType.INT64, shape), data
        elif role == "pads":
            values = [self.pick((0, 1)) for _ in range(2 * r)]
        elif role == "slice":
            values = self.slice_part(p, pos, s)
        else:  # pragma: no cover - table and branches agree
            raise Retry(role)
        return TensorType(DType.INT64, (len(values),)), np.array(values, np.int64)

    def slice_part(self, p: Op, pos: int, s: tuple[int, ...]) -> list[int]:
        if not s:
            raise Retry("slice of a scalar")
        cache = self.__dict__.setdefault("_slices", {})
        if p.call not in cache:
            count = 1 if self.chance(0.6) else self.pick(range(1, len(s) + 1))
            axes = sorted(self.rng.choice(len(s), size=count, replace=False).tolist())
            starts, ends = [], []
            for a in axes:
                lo = self.pick(range(s[a]))
                starts.append(lo)
                ends.append(self.pick(range(lo + 1, s[a] + 1)))
            cache[p.call] = (starts, ends, axes, [1] * len(axes))
        return list(cache[p.call][pos - 1])

    def generic_attrs(self, p: Op, inputs: list[Value]) -> None:
        """Choose the attribute variables no proposer chose, from domains named by attribute."""
        rank = None
        if inputs and isinstance(inputs[0].type, TensorType) and inputs[0].type.shape is not None:
            rank = len(inputs[0].type.shape)
        for key, a in sorted(p.attrs, key=lambda kv: kv[0] != "auto_pad"):
            if isinstance(a, AttrVar) and a.name not in self.attrs:
                self.attr(p, key, lambda key=key: self.attr_domain(p.op, key, rank))
                if key == "auto_pad" and self.attrs[a.name] not in (None, "NOTSET", b"NOTSET"):
                    pads = dict(p.attrs).get("pads")
                    if isinstance(pads, AttrVar) and pads.name not in self.attrs:
                        self.attrs[pads.name] = None

    def attr_domain(self, op: str, key: str, rank: int | None) -> Any:
        r = rank or 0
        if key == "perm":
            others = [
                list(v)
                for v in self.attrs.values()
                if isinstance(v, (list, tuple)) and len(v) == r and sorted(v) == list(range(r))
            ]
            if others and self.chance(0.5):
                other = self.pick(others)
                return [int(i) for i in np.argsort(other)] if self.chance(0.7) else other
            perm = list(self.rng.permutation(r)) if self.chance(0.7) else list(reversed(range(r)))
            return [int(i) for i in perm]
        if key == "axis":
            hi = r + 1 if op == "Flatten" else r
            return self.pick(range(-r, hi)) if r or op == "Flatten" else 0
        if key == "axes":
            return sorted(self.rng.choice(max(r, 1), size=1, replace=False).tolist())
        if key in (
            "transA",
            "transB",
            "keepdims",
            "noop_with_empty_axes",
            "allowzero",
            "count_include_pad",
        ):
            return self.pick((0, 1))
        if key in ("alpha", "beta"):
            return self.pick((0.5, 1.0, 2.0, -1.5))
        if key == "epsilon":
            return self.pick((1e-5, 1e-3, 1e-6))
        if key == "group":
            return self.pick((1, 2))
        if key == "to":
            return int(
                self.pick((DType.FLOAT, DType.DOUBLE, DType.FLOAT16, DType.INT32, DType.INT64))
            )
        if key == "approximate":
            return self.pick(("none", "tanh"))
        if key == "auto_pad":
            return self.pick(("NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"))
        if key == "momentum":
            return 0.9
        if key in ("min", "max"):
            return self.pick((-1.0, 0.0, 0.5, 1.0, 6.0))
        if key == "ratio":
            return self.pick((0.0, 0.5))
        if key in ("is_test", "training_mode", "ceil_mode"):
            return self.pick((0, 1))
        if key == "mode":
            return "constant"
        if key == "value":
            return self.pick((0.0, 1.5))
        if key in ("strides", "dilations"):
            return [self.pick((1, 2))] * max(r - 2, 1)
        if key == "pads":
            return [self.pick((0, 1))] * (2 * max(r - 2, 1))
        if key == "kernel_shape":
            return [self.pick((1, 2))] * max(r - 2, 1)
        return self.pick((0, 1, 2, -1))


#: Ops whose output has (at least) the shape of their first input.
_TRANSPARENT = frozenset(
    [
        "Identity",
        "Neg",
        "Abs",
        "Relu",
        "Exp",
        "Log",
        "Sqrt",
        "Tanh",
        "Erf",
        "Sigmoid",
        "Softplus",
        "Reciprocal",
        "Sign",
        "Floor",
        "Ceil",
        "LeakyRelu",
        "Elu",
        "HardSigmoid",
        "HardSwish",
        "Gelu",
        "Clip",
        "Dropout",
        "Cast",
        "Softmax",
        "LogSoftmax",
        "PRelu",
        "LayerNormalization",
        "BatchNormalization",
        "InstanceNormalization",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Where",
    ]
)


def _transparent_leaf(p: Pattern) -> str | None:
    """The variable at the end of a chain of shape-preserving ops through their data input."""
    while isinstance(p, Op) and p.op in _TRANSPARENT and p.args:
        p = p.args[1] if p.op == "Where" and len(p.args) > 1 else p.args[0]
    return p.name if isinstance(p, Var) else None


def without_absent(roots, env: dict[str, Any]) -> tuple:
    """Patterns without keyword attributes whose value is None (the attribute is left out),
    as the rewriter does for attribute variables bound to an omitted attribute."""
    memo: dict[int, Pattern] = {}

    def walk(p: Pattern) -> Pattern:
        if not isinstance(p, Op):
            return p
        if id(p) in memo:
            return memo[id(p)]
        attrs = []
        for name, a in p.attrs:
            try:
                v = env[a.name] if isinstance(a, AttrVar) else evaluate(a.tree, env)
            except Exception:  # noqa: BLE001 - instantiate reports it
                v = 0
            if v is not None:
                attrs.append((name, a))
        out = Op(p.op, tuple(walk(x) for x in p.args), tuple(attrs), p.domain, p.index, p.call)
        memo[id(p)] = out
        return out

    return tuple(walk(r) for r in roots)


def _fits(value: Any, name: str) -> bool:
    """Whether a literal from the where clause could be a value of attribute ``name``."""
    if name in _STRING_ATTRS or isinstance(value, str):
        return name in _STRING_ATTRS and isinstance(value, str)
    if name in ("perm", "axes", "pads", "strides", "kernel_shape", "dilations"):
        return isinstance(value, list)
    if name in ("epsilon", "alpha", "beta"):
        return isinstance(value, (int, float))
    if name in ("group", "kernel_shape"):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return isinstance(value, int) and not isinstance(value, bool)


def _factorization(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``parts`` positive ints whose product is ``total``."""
    out = [1] * parts
    n = total
    p = 2
    factors = []
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    for f in factors:
        out[int(rng.integers(parts))] *= f
    return out
