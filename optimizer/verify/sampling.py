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
    #: variables the where clause wants not constant (``not is_const(w)``)
    nonconst_hint: set[str] = field(default_factory=set)


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
                    if node.func.id in VALUE_FUNCTIONS:
                        inspected.add(first.id)
                    if node.func.id in ("is_const", "is_scalar_like", *VALUE_FUNCTIONS):
                        const_hint.add(first.id)
    where_literals, var_hints, rank_hints = _where_hints(rule.where.tree if rule.where else None)
    nonconst = set()
    if rule.where is not None:
        for node in ast.walk(rule.where.tree):
            if (
                isinstance(node, ast.UnaryOp)
                and isinstance(node.op, ast.Not)
                and _call_of(node.operand, "is_const", 1)
            ):
                nonconst.add(node.operand.args[0].id)
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
        nonconst_hint=nonconst,
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


#: Where-clause functions that read a constant's data (its values are drawn, not symbolic).
VALUE_FUNCTIONS = ("value", "all_equal", "is_identity_matrix")


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
    """One attempt at an instance: assigns variables while walking the match bottom-up.

    Every choice is drawn from the whole domain the ONNX operator allows (within small sizes):
    any permutation, any axis (negative ones too), strides and dilations 1 or 2, asymmetric
    pads, every auto_pad, any group dividing the channels, broadcast shapes with size-1
    dimensions anywhere, reshape targets with 0 and -1, unequal split sizes, slice steps ...
    """

    def __init__(
        self,
        shape: RuleShape,
        rng: np.random.Generator,
        opset: int,
        seen: set[tuple[str, Any]] | None = None,
    ) -> None:
        self.s = shape
        self.rng = rng
        self.opset = opset
        #: (variable, value) pairs of the instances found so far (see :meth:`novel`)
        self.seen = seen if seen is not None else set()
        self.types: dict[str, TensorType] = {}
        self.data: dict[str, np.ndarray] = {}
        self.attrs: dict[str, Any] = {}
        self.nodes: dict[int, Any] = {}
        self.const: set[str] = set()
        #: inspected constants whose values were drawn freely (redrawn when the where clause
        #: fails, see :meth:`redraw_values`)
        self.free_values: set[str] = set()
        #: the variable a proposal is for
        self.leaf: str | None = None
        #: shapes of convolution inputs drawn so far
        self.conv_inputs: list[tuple[int, ...]] = []
        #: the least rank a call's output must have for its consumer (a Pad under a Conv)
        self.min_rank: dict[int, int] = {}
        #: the least rank of the shape being proposed
        self.floor = 0

    # random helpers
    def pick(self, seq):
        seq = list(seq)
        return seq[int(self.rng.integers(len(seq)))]

    def dim(self) -> int:
        return self.pick(DIMS)

    def shape(self, lo: int = 0, hi: int = 4) -> tuple[int, ...]:
        r = self.pick(range(lo, hi + 1))
        return tuple(self.dim() for _ in range(r))

    def free_shape(self, lo: int = 0, hi: int = 4) -> tuple[int, ...]:
        """A shape for the variable being proposed (:attr:`leaf`) that no operand constrains:
        of the rank the where clause demands, if any; often the shape of a variable already
        drawn (where clauses compare shapes: ``same_shape(x, y)``, ``dim(x, 0) == dim(z, 0)``);
        otherwise any rank in [lo, hi]."""
        lo = min(max(lo, self.floor), hi)
        r = self.s.rank_hints.get(self.leaf or "")
        if r is not None and not lo <= r <= hi:
            r = None
        drawn = [
            tuple(t.shape)
            for t in self.types.values()
            if lo <= len(t.shape) <= hi and (r is None or len(t.shape) == r)
        ]
        if drawn and self.chance(0.35):
            return self.pick(drawn)
        if r is None:
            return self.shape(lo, hi)
        return tuple(self.dim() for _ in range(r))

    def free_rank(self, *choices: int) -> int:
        """One of ``choices``, the rank the where clause demands of :attr:`leaf` if it is one."""
        r = self.s.rank_hints.get(self.leaf or "")
        return r if r in choices else self.pick(choices)

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def subset(self, n: int, lo: int = 1, hi: int | None = None) -> list[int]:
        """A sorted random subset of ``range(n)`` with ``lo`` to ``hi`` elements (``lo`` of them
        half the time)."""
        hi = n if hi is None else min(hi, n)
        if n <= 0 or hi < lo:
            return []
        k = lo if self.chance(0.5) else self.pick(range(lo, hi + 1))
        return sorted(int(i) for i in self.rng.choice(n, size=k, replace=False))

    def signed(self, axes: list[int], r: int) -> list[int]:
        """Some of ``axes`` written as negative axes (counting from the end of rank ``r``)."""
        return [a - r if self.chance(0.35) else a for a in axes]

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
                elif optional and name in _OPTIONAL and self.chance(0.25):
                    self.attrs[a.name] = None  # the attribute is absent
                else:
                    self.attrs[a.name] = self.novel(a.name, choose)
            return self.attrs[a.name]
        return None

    def novel(self, name: str, draw):
        """``draw()``, drawn again (up to 3 times) while the value is one that instances already
        found give ``name``: the pool then covers each variable's domain rather than its most
        likely values."""
        value = draw()
        for _ in range(2):
            if (name, _key(value)) not in self.seen:
                break
            value = draw()
        return value

    def mentions(self, p: Op, name: str) -> bool:
        return any(key == name for key, _ in p.attrs)

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
                self.leaf = leaf
                self.floor = max(self.min_rank.get(p.call, 0), _MIN_RANK.get(p.op, 0))
                t, data = self.propose(p, pos, known)
                t = self.ranked(leaf, t, data, p.op)
                if isinstance(a, Op) and (data is not None or not t.dtype.is_float):
                    t, data = TensorType(DType.FLOAT, t.shape), None
                self.assign(leaf, t, data)
            if isinstance(a, Op):
                if a.call not in self.nodes and (a.op in _RANK_PRESERVING or a.op in _TRANSPARENT):
                    # Pad(x) under a Conv: x must have the Conv's rank too
                    self.min_rank[a.call] = max(
                        self.min_rank.get(a.call, 0), _MIN_RANK.get(p.op, 0)
                    )
                self.value(a)
        inputs = [self.value(a) for a in p.args]
        prepare = getattr(self, f"prepare_{p.op}", None)
        if prepare is not None:
            try:
                prepare(p, inputs)
            except (IndexError, ValueError, ZeroDivisionError, TypeError) as exc:
                raise Retry(f"attributes: {exc}") from None
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
            return t if _static(t) else None
        return None

    def assign(self, name: str, t: TensorType, data: np.ndarray | None = None) -> None:
        self.types[name] = t
        if name in self.s.literals:
            data = np.full(t.shape, self.s.literals[name], dtype=t.dtype.to_numpy())
        if data is not None:
            self.data[name] = np.asarray(data, dtype=t.dtype.to_numpy())
            self.const.add(name)
        elif name in self.s.const_hint and not self.chance(
            0.9 if name in self.s.nonconst_hint else 0.1
        ):
            self.const.add(name)
            if name in self.s.inspected:
                self.free_values.add(name)
                self.data[name] = self.inspected_values(name, t)

    def inspected_values(self, name: str, t: TensorType) -> np.ndarray:
        hints = self.s.var_hints.get(name)
        if hints and self.chance(0.85):
            return np.full(tuple(t.shape), self.pick(hints))
        if t.dtype == DType.BOOL:
            return self.rng.random(tuple(t.shape)) < 0.5
        return self.float_values(t)

    def redraw_values(self) -> bool:
        """Draw new values for the freely drawn inspected constants (False when there are none):
        a where clause that asks for particular constants (an identity matrix, all ones) is
        retried on the same shapes with other value families before the sample is dropped."""
        for name in self.free_values:
            self.data[name] = self.inspected_values(name, self.types[name])
        return bool(self.free_values)

    def float_values(self, t: TensorType) -> np.ndarray:
        """Values from one of several families: random normal or positive, small integers, a
        constant (a where-clause literal, 0, 1, -1 ...), an identity over two axes of equal size
        (broadcast over the others: identity matrices and identity kernels of any size), or a
        one-hot pattern."""
        shape = tuple(t.shape)
        kind = self.pick(
            ("normal", "normal", "positive", "hint", "one", "int", "eye", "eye", "onehot")
        )
        hints = [v for v in self.s.where_literals if isinstance(v, (int, float))]
        if kind == "hint" and hints:
            return np.full(shape, float(self.pick(hints)))
        if kind == "one":
            return np.full(shape, self.pick((1.0, 0.0, -1.0, 2.0, 0.5)))
        if kind == "int":
            return self.rng.integers(-3, 4, size=shape).astype(float)
        if kind == "eye" and len(shape) >= 2:
            pairs = [
                (i, j)
                for i in range(len(shape))
                for j in range(i + 1, len(shape))
                if shape[i] == shape[j]
            ]
            if pairs:
                i, j = self.pick(pairs)
                grid = np.indices(shape)
                return (grid[i] == grid[j]).astype(float)
        if kind == "onehot" and shape:
            out = np.zeros(shape)
            flat = out.reshape(-1)
            if flat.size:
                flat[int(self.rng.integers(flat.size))] = 1.0
            return out
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
            name = self.leaf or ""
            return self.novel(name, lambda: self.int_input(role, p, pos, x))
        method = getattr(self, f"propose_{p.op}", None)
        if method is not None:
            try:
                t = method(p, pos, known)
            except (IndexError, ValueError, ZeroDivisionError, TypeError) as exc:
                raise Retry(f"proposal failed: {exc}") from None
            if t is not None:
                return t, None
        return self.elementwise(p, pos, known), None

    def broadcast_partner(self, s: tuple[int, ...]) -> tuple[int, ...]:
        """A shape that broadcasts with ``s``: the same, a scalar, or any rank up to ``len(s)``
        (sometimes one more) whose dims are ``s``'s or 1 in any position (and, where ``s`` has
        a 1, any size: broadcasting both ways)."""
        u = self.rng.random()
        if u < 0.3 or (not s and u < 0.8):
            return s
        if u < 0.38:
            return ()
        k = self.pick(range(0, len(s) + 1))
        out = []
        for d in s[len(s) - k :]:
            if d == 1:
                out.append(1 if self.chance(0.7) else self.dim())
            else:
                out.append(d if self.chance(0.55) else 1)
        lead = (self.pick((1, self.dim())),) if self.chance(0.08) and len(s) < 4 else ()
        return lead + tuple(out)

    def elementwise(self, p: Op, pos: int, known: list) -> TensorType:
        dtype = (
            DType.BOOL
            if p.op in _ELEMENTWISE_BOOL or (p.op == "Where" and pos == 0)
            else DType.FLOAT
        )
        ref = next((k for k in known if k is not None), None)
        if ref is None:
            return TensorType(dtype, self.free_shape(_MIN_RANK.get(p.op, 0), 4))
        return TensorType(dtype, self.broadcast_partner(tuple(ref.shape)))

    def propose_MatMul(self, p, pos, known):
        a, b = known[0], known[1]
        if pos == 0 and b is None:
            return TensorType(DType.FLOAT, self.free_shape(1, 4))
        if pos == 1 and a is not None:
            sa = tuple(a.shape)
            k = sa[-1]
            r = self.free_rank(1, 2, 2, 3, 4, len(sa))
            if r == 1:
                return TensorType(DType.FLOAT, (k,))
            batch_a = sa[:-2]
            batch = []
            for i in range(r - 2):  # aligned from the right with a's batch dims
                j = len(batch_a) - (r - 2) + i
                if j >= 0:
                    d = batch_a[j]
                    batch.append(self.pick((d, d, 1)) if d != 1 else self.pick((1, 1, self.dim())))
                else:
                    batch.append(self.dim())
            return TensorType(DType.FLOAT, tuple(batch) + (k, self.dim()))
        if pos == 0 and b is not None:
            sb = tuple(b.shape)
            k = sb[-2] if len(sb) >= 2 else sb[0]
            lead = tuple(self.dim() for _ in range(self.free_rank(1, 2, 2, 3) - 1))
            if len(sb) > 2 and self.chance(0.6):
                lead = tuple(self.pick((d, 1)) for d in sb[:-2]) + (self.dim(),)
            return TensorType(DType.FLOAT, lead + (k,))
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
            return TensorType(
                DType.FLOAT, self.pick(((n,), (m, n), (1, n), (m, 1), (), (1,), (1, 1)))
            )
        return None

    # Conv: the weight proposal chooses the attributes, knowing the input's shape.
    def conv_attrs(self, p: Op, x: tuple[int, ...], kernel: list[int] | None) -> list[int]:
        """Strides, dilations, auto_pad and pads (each axis drawn on its own, pads asymmetric)
        for a convolution over ``x``; returns a kernel that fits (``kernel`` when given)."""
        n_sp = len(x) - 2
        if n_sp < 1:
            raise Retry("convolution input of rank < 3")
        self.attr(p, "strides", lambda: [self.pick((1, 1, 2)) for _ in range(n_sp)])
        dil = self.attr(p, "dilations", lambda: [self.pick((1, 1, 2)) for _ in range(n_sp)])
        auto = self.attr(
            p,
            "auto_pad",
            lambda: self.pick(("NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")),
        )
        explicit = auto in (None, "NOTSET", b"NOTSET")
        pads = self.attr(
            p,
            "pads",
            lambda: [self.pick((0, 0, 1, 2)) for _ in range(2 * n_sp)] if explicit else None,
        )
        if not explicit:
            pads = None
        pads = list(pads) if pads else [0] * (2 * n_sp)
        d = list(dil) if dil else [1] * n_sp
        if len(d) != n_sp or len(pads) != 2 * n_sp:
            raise Retry("attribute lengths do not fit the rank")
        out = []
        for i, size in enumerate(x[2:]):
            room = size + pads[i] + pads[i + n_sp] if explicit else size
            if kernel is not None:
                k = kernel[i]
                same = not explicit and auto not in ("VALID", b"VALID")
                if not same and (k - 1) * d[i] + 1 > room:
                    raise Retry("kernel larger than the padded input")
                out.append(k)
                continue
            same = not explicit and auto not in ("VALID", b"VALID")  # SAME_*: any kernel
            fits = [k for k in (1, 2, 3) if same or (k - 1) * d[i] + 1 <= room]
            if not fits:
                raise Retry("no kernel fits")
            out.append(self.pick(fits))
        return out

    def propose_Conv(self, p, pos, known):
        x, w = known[0], known[1]
        if pos == 0:
            if w is not None:
                group = self.attr(p, "group", lambda: 1) or 1
                n_sp = len(w.shape) - 2
                c = w.shape[1] * group
                dil = self.attrs.get(_attr_var(p, "dilations") or "", None) or [1] * n_sp
                sp = tuple(
                    max((k - 1) * dil[i % len(dil)] + 1, self.pick((1, 2, 3, 4, 5)))
                    for i, k in enumerate(w.shape[2:])
                )
            else:
                group = self.attr(p, "group", lambda: self.pick((1, 1, 1, 2, 3))) or 1
                n_sp = self.bound_spatial_rank(p) or self.pick((1, 2, 2, 2, 3))
                c = group * self.pick((1, 1, 2, 3, 4) if group == 1 else (1, 2))
                others = [s for s in self.conv_inputs if len(s) == n_sp + 2]
                if others and self.chance(0.6):  # convs of one rule often share shapes
                    other = self.pick(others)
                    return TensorType(DType.FLOAT, (other[0], self.pick((c, other[1]))) + other[2:])
                sizes = (1, 2, 3, 4, 5) if n_sp < 3 else (1, 2, 3)
                sp = tuple(self.pick(sizes) for _ in range(n_sp))
            return TensorType(DType.FLOAT, (self.pick((1, 1, 2)), c) + sp)
        if pos == 1 and x is not None:
            xs = tuple(x.shape)
            if len(xs) < 3:
                raise Retry("convolution input of rank < 3")
            self.conv_inputs.append(xs)
            c = xs[1]
            group = self.attr(p, "group", lambda: self.pick(_divisors(c))) or 1
            if c % group:
                raise Retry("channels not divisible by group")
            kernel = self.conv_attrs(p, xs, None)
            given = self.attr(p, "kernel_shape", lambda: list(kernel))
            kernel = list(given) if given else kernel
            if len(kernel) != len(xs) - 2:
                raise Retry("kernel_shape of the wrong length")
            m = self.pick(sorted({group, 2 * group, c if c % group == 0 else group}))
            return TensorType(DType.FLOAT, (m, c // group) + tuple(kernel))
        if pos == 2 and w is not None:
            return TensorType(DType.FLOAT, (w.shape[0],))
        return None

    def bound_spatial_rank(self, p: Op) -> int | None:
        """The number of spatial axes that attributes already chosen imply (shared attribute
        variables of several convolutions), or None."""
        for name, per_axis in (("strides", 1), ("dilations", 1), ("kernel_shape", 1), ("pads", 2)):
            v = self.attrs.get(_attr_var(p, name) or "")
            if isinstance(v, (list, tuple)) and v:
                return len(v) // per_axis
        return None

    def prepare_Conv(self, p, inputs):
        """Attributes no proposal chose (the weight was not a fresh variable)."""
        x, w = _shape_of(inputs[0]), _shape_of(inputs[1]) if len(inputs) > 1 else None
        if x is None or w is None or len(x) < 3:
            return
        if len(w) == len(x) and w[1] and x[1] % w[1] == 0:
            self.attr(p, "group", lambda: x[1] // w[1])
        names = ("strides", "dilations", "auto_pad", "pads")
        if any(_attr_var(p, n) and _attr_var(p, n) not in self.attrs for n in names):
            self.conv_attrs(p, x, list(w[2:]))
        self.attr(p, "kernel_shape", lambda: list(w[2:]))

    def _pool(self, p, pos, known):
        if pos != 0:
            return None
        n_sp = self.pick((1, 2, 2))
        return TensorType(
            DType.FLOAT,
            (self.pick((1, 2)), self.dim()) + tuple(self.pick(range(1, 6)) for _ in range(n_sp)),
        )

    propose_MaxPool = propose_AveragePool = propose_LpPool = _pool

    def _prepare_pool(self, p, inputs):
        """Kernel, strides, dilations (MaxPool), pads smaller than the kernel, auto_pad,
        ceil_mode, chosen per axis for the input's spatial shape."""
        x = _shape_of(inputs[0])
        if x is None or len(x) < 3:
            return
        n_sp = len(x) - 2
        auto = self.attr(
            p,
            "auto_pad",
            lambda: self.pick(("NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")),
        )
        explicit = auto in (None, "NOTSET", b"NOTSET")
        dil = self.attr(p, "dilations", lambda: [self.pick((1, 1, 2)) for _ in range(n_sp)])
        d = list(dil) if dil else [1] * n_sp
        kernel = self.attr(
            p,
            "kernel_shape",
            lambda: [
                self.pick([k for k in (1, 2, 3) if (k - 1) * d[i] + 1 <= x[2 + i]] or [1])
                for i in range(n_sp)
            ],
        )
        kernel = list(kernel) if kernel else [1] * n_sp
        self.attr(p, "strides", lambda: [self.pick((1, 1, 2)) for _ in range(n_sp)])
        self.attr(
            p,
            "pads",
            lambda: (
                [self.pick(range(min(kernel[i % n_sp], 3))) for i in range(2 * n_sp)]
                if explicit
                else None
            ),
        )
        self.attr(p, "ceil_mode", lambda: self.pick((0, 0, 1)))
        self.attr(p, "count_include_pad", lambda: self.pick((0, 1)))

    prepare_MaxPool = prepare_AveragePool = prepare_LpPool = _prepare_pool

    def propose_GlobalAveragePool(self, p, pos, known):
        return TensorType(DType.FLOAT, (self.pick((1, 2)), self.dim()) + self.shape(1, 3))

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
            return TensorType(DType.FLOAT, self.free_shape(1, 4))
        if x is None:
            return None
        r = len(x.shape)
        axis = self.attr(p, "axis", lambda: self.pick(range(-r, r)))
        axis = -1 if axis is None else axis
        return TensorType(DType.FLOAT, tuple(x.shape)[axis % r :])

    def propose_Concat(self, p, pos, known):
        first = next((k for k in known if k is not None), None)
        if first is None:
            return TensorType(DType.FLOAT, self.free_shape(1, 4))
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
        shape = list(self.free_shape(1, 4))
        r = len(shape)
        axis = self.attr(p, "axis", lambda: self.pick(range(-r, r)))
        axis = 0 if axis is None else axis % r
        shape[axis] = n + self.pick((0, 1, 2)) if n > 1 else shape[axis]
        return TensorType(DType.FLOAT, tuple(shape))

    def prepare_Split(self, p, inputs):
        """The ``split`` attribute (opsets before 13): unequal sizes summing to the axis."""
        x = _shape_of(inputs[0])
        if x is None or not x or not self.mentions(p, "split"):
            return
        axis = (self.attr(p, "axis", lambda: self.pick(range(-len(x), len(x)))) or 0) % len(x)
        self.attr(p, "split", lambda: self.sizes(x[axis], self.s.arity[p.call]))

    def sizes(self, total: int, n: int) -> list[int]:
        """``n`` positive sizes summing to ``total`` (unequal where possible)."""
        if total < n:
            raise Retry("split axis too short")
        if n <= 1:
            return [total] * n
        cuts = sorted(self.rng.choice(range(1, total), size=n - 1, replace=False).tolist())
        return [b - a for a, b in zip([0] + cuts, cuts + [total], strict=False)]

    def propose_Squeeze(self, p, pos, known):
        if pos != 0:
            return None
        shape = [self.pick((1, 1, 2, 3, 4)) for _ in range(self.pick((1, 2, 3, 4)))]
        if 1 not in shape:
            shape[self.pick(range(len(shape)))] = 1
        return TensorType(DType.FLOAT, tuple(shape))

    def prepare_Squeeze(self, p, inputs):
        """The ``axes`` attribute (opsets before 13): size-1 axes, some negative."""
        x = _shape_of(inputs[0])
        if x is None or not self.mentions(p, "axes"):
            return
        ones = [i for i, d in enumerate(x) if d == 1]
        if ones:
            chosen = [ones[i] for i in self.subset(len(ones), 1, 2)]
            self.attr(p, "axes", lambda: self.signed(chosen, len(x)))

    def prepare_Unsqueeze(self, p, inputs):
        """The ``axes`` attribute (opsets before 13): one or two new axes, some negative."""
        x = _shape_of(inputs[0])
        if x is None or not self.mentions(p, "axes"):
            return
        k = self.pick((1, 1, 2))
        self.attr(p, "axes", lambda: self.signed(self.subset(len(x) + k, k, k), len(x) + k))

    def _prepare_reduce(self, p, inputs):
        """The ``axes`` attribute (before opset 18): any non-empty set, some negative."""
        x = _shape_of(inputs[0])
        if x is None or not x or not self.mentions(p, "axes"):
            return
        self.attr(p, "axes", lambda: self.signed(self.subset(len(x)), len(x)))

    prepare_ReduceSum = prepare_ReduceMean = prepare_ReduceMax = prepare_ReduceMin = _prepare_reduce
    prepare_ReduceProd = prepare_ReduceSumSquare = prepare_ReduceL2 = prepare_ReduceL1 = (
        _prepare_reduce
    )
    prepare_ReduceLogSumExp = _prepare_reduce

    def propose_Clip(self, p, pos, known):
        return TensorType(DType.FLOAT, ()) if pos > 0 else None

    def propose_Cast(self, p, pos, known):
        return TensorType(self.pick(_CAST_TYPES), self.free_shape())

    def propose_CastLike(self, p, pos, known):
        """Any pair of element types, often equal; the target's shape is free."""
        x = known[0]
        if pos == 1 and x is not None and self.chance(0.4):
            return TensorType(x.dtype, self.free_shape())
        return TensorType(self.pick(_CAST_TYPES), self.free_shape())

    def int_input(self, role: str, p: Op, pos: int, x: TensorType) -> tuple[TensorType, np.ndarray]:
        s = tuple(x.shape)
        r = len(s)
        if role == "reshape":
            u = self.rng.random()
            if s and u < 0.25:
                values = [int(d) for d in self.rng.permutation(np.array(s, dtype=np.int64))]
            elif s and u < 0.55:  # keeps leading dims (where 0 copies them), regroups the rest
                j = self.pick(range(1, len(s) + 1))
                rest = int(np.prod(s[j:]))
                parts = self.pick((1, 2)) if rest > 1 else self.pick((0, 1))
                values = [int(d) for d in s[:j]] + _factorization(rest, parts, self.rng)
            else:
                values = _factorization(int(np.prod(s)), self.pick((1, 2, 3, 4)), self.rng)
            if values and self.chance(0.35):
                values[self.pick(range(len(values)))] = -1
            for i in range(min(r, len(values))):
                if values[i] == s[i] and self.chance(0.5):
                    values[i] = 0  # copies the input's dimension i
        elif role == "expand":
            grown = []
            for d in s:
                if d == 1:
                    grown.append(self.pick((1, 2, 3)))
                else:
                    grown.append(d if self.chance(0.75) else 1)  # 1: x's dim is kept
            if grown and self.chance(0.15):
                grown = grown[self.pick(range(1, len(grown) + 1)) :]  # a shorter target
            extra = min(self.pick((0, 0, 0, 1, 2)), max(0, 4 - len(grown)))
            values = [self.dim() for _ in range(extra)] + grown
        elif role == "tile":
            values = [self.pick((1, 1, 2, 3)) for _ in s]
        elif role == "squeeze":
            ones = [i for i, d in enumerate(s) if d == 1]
            if not ones:
                raise Retry("nothing to squeeze")
            values = self.signed([ones[i] for i in self.subset(len(ones), 1, 2)], r)
        elif role == "unsqueeze":
            k = self.pick((1, 1, 2))
            values = self.signed(self.subset(r + k, k, k), r + k)
        elif role == "axes":
            if r == 0:
                raise Retry("reduction of a scalar")
            values = self.signed(self.subset(r), r)
        elif role == "split":
            if not r:
                raise Retry("split of a scalar")
            axis = (self.attr(p, "axis", lambda: self.pick(range(-r, r))) or 0) % r
            values = self.sizes(s[axis], self.s.arity[p.call])
        elif role == "indices":
            if not r:
                raise Retry("gather from a scalar")
            axis = (self.attr(p, "axis", lambda: self.pick(range(-r, r))) or 0) % r
            shape = self.shape(0, 2)
            data = self.rng.integers(-s[axis], s[axis], size=shape)
            return TensorType(DType.INT64, shape), data
        elif role == "pads":
            values = [self.pick((0, 0, 1, 2)) for _ in range(2 * r)]
            if self.chance(0.25):  # padding one side of one axis (channel padding, say)
                keep = self.pick(range(2 * r))
                values = [v if i == keep else 0 for i, v in enumerate(values)]
            for i in range(2 * r):  # sometimes a crop (negative pad) that leaves something
                if s[i % r] > 1 and self.chance(0.08):
                    values[i] = -1
            for a in range(r):
                if s[a] + values[a] + values[a + r] < 1:
                    values[a] = values[a + r] = 0
        elif role == "slice":
            values = self.slice_part(p, pos, s)
        else:  # pragma: no cover - table and branches agree
            raise Retry(role)
        return TensorType(DType.INT64, (len(values),)), np.array(values, np.int64)

    def slice_part(self, p: Op, pos: int, s: tuple[int, ...]) -> list[int]:
        """Starts, ends, axes, steps of one Slice: any axes (some negative), steps 1, 2, -1,
        -2 where the pattern passes steps, negative and out-of-range starts and ends."""
        if not s:
            raise Retry("slice of a scalar")
        cache = self.__dict__.setdefault("_slices", {})
        if p.call not in cache:
            r = len(s)
            with_axes, with_steps = len(p.args) > 3, len(p.args) > 4
            count = 1 if self.chance(0.6) else self.pick(range(1, r + 1))
            axes = self.subset(r, count, count) if with_axes else list(range(count))
            starts, ends, steps = [], [], []
            for a in axes:
                n = s[a]
                step = self.pick((1, 1, 1, 2, -1, -2)) if with_steps else 1
                if step > 0:
                    lo = self.pick(range(n))
                    hi = self.pick(range(lo + 1, n + 1))
                    start = lo - n if self.chance(0.3) else lo
                    end = self.pick((n, n + 3, _INT_MAX)) if hi == n and self.chance(0.5) else hi
                    end = end - n if end < n and self.chance(0.3) else end
                else:
                    hi = self.pick(range(n))
                    lo = self.pick(range(-1, hi))
                    start = (
                        self.pick((hi, hi - n))
                        if not (hi == n - 1 and self.chance(0.3))
                        else (_INT_MAX)
                    )
                    end = self.pick((-n - 1, _INT_MIN)) if lo == -1 else self.pick((lo, lo - n))
                starts.append(start)
                ends.append(end)
                steps.append(step)
            axes = self.signed(axes, r) if with_axes else axes
            cache[p.call] = (starts, ends, axes, steps)
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
        n_sp = max(r - 2, 1)
        if key == "perm":
            others = [
                list(v)
                for v in self.attrs.values()
                if isinstance(v, (list, tuple)) and len(v) == r and sorted(v) == list(range(r))
            ]
            if others and self.chance(0.4):
                other = self.pick(others)
                return [int(i) for i in np.argsort(other)] if self.chance(0.7) else other
            perm = list(self.rng.permutation(r)) if self.chance(0.8) else list(reversed(range(r)))
            return [int(i) for i in perm]
        if key == "axis":
            hi = r + 1 if op == "Flatten" else r
            return self.pick(range(-r, hi)) if r or op == "Flatten" else 0
        if key == "axes":
            return self.signed(self.subset(max(r, 1)), max(r, 1))
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
            return self.pick((0.5, 1.0, 2.0, -1.5, 0.0, 0.2))
        if key == "epsilon":
            return self.pick((1e-5, 1e-3, 1e-6, 1e-12, 0.1))
        if key == "group":
            return self.pick((1, 2))
        if key == "to":
            return int(self.pick(_CAST_TYPES))
        if key == "approximate":
            return self.pick(("none", "tanh"))
        if key == "auto_pad":
            return self.pick(("NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"))
        if key == "momentum":
            return self.pick((0.9, 0.99))
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
            return [self.pick((1, 1, 2)) for _ in range(n_sp)]
        if key == "pads":
            return [self.pick((0, 0, 1)) for _ in range(2 * n_sp)]
        if key == "kernel_shape":
            return [self.pick((1, 2)) for _ in range(n_sp)]
        return self.pick((0, 1, 2, -1))


#: Dimension sizes of free axes (1 exercises broadcasting and degenerate cases).
DIMS = (1, 2, 2, 3, 3, 4)
#: Element types drawn for Cast and CastLike operands and ``to`` attributes.
_CAST_TYPES = (
    DType.FLOAT,
    DType.FLOAT,
    DType.DOUBLE,
    DType.FLOAT16,
    DType.INT32,
    DType.INT64,
    DType.INT8,
    DType.UINT8,
    DType.BOOL,
)
#: Ranks below which an op's data input is not valid (free shapes start there).
_MIN_RANK = {
    "Slice": 1,
    "Gather": 1,
    "Pad": 1,
    "Flatten": 1,
    "Softmax": 1,
    "LogSoftmax": 1,
    "Concat": 1,
    "Split": 1,
    "Squeeze": 1,
    "Tile": 1,
    "Transpose": 1,
    "MatMul": 1,
    "LayerNormalization": 1,
    "Gemm": 2,
    "BatchNormalization": 2,
    "InstanceNormalization": 3,
    "Conv": 3,
    "MaxPool": 3,
    "AveragePool": 3,
    "LpPool": 3,
    "GlobalAveragePool": 3,
    "GlobalMaxPool": 3,
    **{f"Reduce{k}": 1 for k in ("Sum", "Mean", "Max", "Min", "Prod", "SumSquare", "L2", "L1")},
}
#: Ops whose output has their first input's rank.
_RANK_PRESERVING = frozenset({"Pad", "Transpose", "Slice", "Tile", "Concat", "Split"})
_INT_MAX = 2**63 - 1
_INT_MIN = -(2**63)


def _key(value: Any) -> Any:
    """A hashable form of an attribute value or an (int type, int array) proposal."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
        return (tuple(value[0].shape), tuple(value[1].reshape(-1).tolist()))
    if isinstance(value, (list, tuple)):
        return tuple(_key(v) for v in value)
    if isinstance(value, np.ndarray):
        return tuple(value.reshape(-1).tolist())
    return value


def seen_values(attrs: dict[str, Any], data: dict[str, np.ndarray]) -> set[tuple[str, Any]]:
    """The (variable, value) pairs of one instance, for :meth:`Sampler.novel`."""
    out = {(k, _key(v)) for k, v in attrs.items()}
    for k, v in data.items():
        if np.asarray(v).dtype.kind in "iu":
            out.add((k, (tuple(np.shape(v)), tuple(np.asarray(v).reshape(-1).tolist()))))
    return out


def _static(t: Any) -> bool:
    return (
        isinstance(t, TensorType)
        and t.shape is not None
        and all(isinstance(d, int) for d in t.shape)
    )


def _shape_of(v: Value | None) -> tuple[int, ...] | None:
    return tuple(v.type.shape) if v is not None and _static(v.type) else None


def _attr_var(p: Op, name: str) -> str | None:
    """The variable bound to attribute ``name`` of ``p`` (None for literals or absent)."""
    for key, a in p.attrs:
        if key == name and isinstance(a, AttrVar):
            return a.name
    return None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0] or [1]


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
