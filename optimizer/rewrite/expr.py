"""Evaluating rule expressions and building a rule's rewrite as IR nodes.

``where`` clauses and attribute expressions are Python syntax, interpreted
here over a whitelist of node types and :data:`FUNCTIONS`, never passed to
``eval``. Tensor variables are IR :class:`~optimizer.ir.Value` objects, so
the same code serves the matcher (real graphs) and the verifier (small
graphs it builds with concrete shapes).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from optimizer.ir import REGISTRY, UNKNOWN, Node, TensorData, TensorType, Value, constant
from optimizer.rewrite.rule import AttrVar, Build, Literal, Op, Pattern, Var


class RuleEvalError(ValueError):
    """A rule expression could not be evaluated for these bindings (the match is skipped)."""


# ------------------------------------------------------------------ functions over values


def _ttype(v: Value) -> TensorType:
    if not isinstance(v, Value) or not isinstance(v.type, TensorType):
        raise RuleEvalError(f"{v!r} is not a tensor value")
    return v.type


def rank(v: Value) -> int:
    """Rank of a tensor (error when unknown, so the match is skipped)."""
    shape = _ttype(v).shape
    if shape is None:
        raise RuleEvalError("unknown rank")
    return len(shape)


def shape(v: Value) -> tuple:
    """The shape as a tuple of ints and symbol names."""
    s = _ttype(v).shape
    if s is None or any(d is None for d in s):
        raise RuleEvalError("unknown shape")
    return tuple(s)


def dim(v: Value, axis: int) -> int | str:
    """One dimension (negative axes count from the end)."""
    s = shape(v)
    if not -len(s) <= axis < len(s):
        raise RuleEvalError(f"axis {axis} out of range for rank {len(s)}")
    return s[axis]


def static_dim(v: Value, axis: int) -> int:
    """One dimension that must be a known integer."""
    d = dim(v, axis)
    if not isinstance(d, int):
        raise RuleEvalError("symbolic dimension")
    return d


def is_const(v: Value) -> bool:
    """Whether the value is a constant tensor."""
    return isinstance(v, Value) and v.is_constant


def value(v: Value) -> np.ndarray:
    """The data of a constant (error for non-constants)."""
    if not is_const(v):
        raise RuleEvalError("not a constant")
    return v.constant.numpy()


def is_scalar_like(v: Value) -> bool:
    """A constant holding one element (any rank)."""
    return is_const(v) and v.constant.size == 1


def dtype(v: Value) -> str:
    """Element type name, lower case (``float``, ``int64`` ...)."""
    return _ttype(v).dtype.name.lower()


def dtype_code(v: Value) -> int:
    """Element type as ONNX's numeric code, for ``Cast(x, to=dtype_code(y))`` (error when
    unknown)."""
    code = int(_ttype(v).dtype)
    if code == 0:
        raise RuleEvalError("unknown element type")
    return code


def is_float(v: Value) -> bool:
    """Floating-point element type."""
    return _ttype(v).dtype.is_float


def same_shape(a: Value, b: Value) -> bool:
    """Both shapes fully known and equal."""
    try:
        return shape(a) == shape(b)
    except RuleEvalError:
        return False


def broadcasts_to(a: Value, b: Value) -> bool:
    """``a`` broadcasts to ``b``'s shape without changing it."""
    sa, sb = shape(a), shape(b)
    if len(sa) > len(sb):
        return False
    return all(x == 1 or x == y for x, y in zip(reversed(sa), reversed(sb)))


def compose(first: Sequence[int], then: Sequence[int]) -> list[int]:
    """The permutation of ``Transpose(Transpose(x, first), then)``."""
    return [int(first[p]) for p in then]


def inverse(perm: Sequence[int]) -> list[int]:
    """The inverse permutation."""
    result = [0] * len(perm)
    for i, p in enumerate(perm):
        result[int(p)] = i
    return result


def identity_perm(n: int) -> list[int]:
    """``[0, 1, ..., n-1]``."""
    return list(range(n))


def norm_axis(axis: int, r: int) -> int:
    """A possibly negative axis as a non-negative one."""
    if not -r <= axis < r:
        raise RuleEvalError(f"axis {axis} out of range for rank {r}")
    return axis % r


def all_equal(v: Value, x: float) -> bool:
    """A constant whose every element equals ``x``."""
    return is_const(v) and bool(np.all(v.constant.numpy() == x))


def is_identity_matrix(v: Value) -> bool:
    """A constant whose first two axes form an identity matrix, every other dim of size 1.

    Covers identity MatMul weights and identity 1x1 (or 1x1x1) convolution kernels; checked
    in one vectorised comparison, not element by element.
    """
    if not is_const(v):
        return False
    data = v.constant.numpy()
    if data.ndim < 2 or data.shape[0] != data.shape[1] or any(d != 1 for d in data.shape[2:]):
        return False
    return bool(np.array_equal(data.reshape(data.shape[:2]), np.eye(data.shape[0])))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        rank, shape, dim, static_dim, is_const, value, is_scalar_like, dtype, is_float,
        same_shape, broadcasts_to, compose, inverse, identity_perm, norm_axis, all_equal,
        dtype_code, is_identity_matrix,
    )
}  # fmt: skip
FUNCTIONS.update(
    {
        "len": len, "range": range, "list": list, "tuple": tuple, "all": all, "any": any,
        "abs": abs, "min": min, "max": max, "sum": sum, "int": int, "float": float,
        "sorted": sorted, "reversed": lambda s: list(reversed(s)),
        "prod": lambda s: int(np.prod(s)),
    }
)  # fmt: skip

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}  # fmt: skip
_CMPOPS = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}  # fmt: skip


def evaluate(tree: ast.expr, env: Mapping[str, Any]) -> Any:
    """Interpret a rule expression over ``env`` (bindings) and :data:`FUNCTIONS`."""
    match tree:
        case ast.Constant(value=v):
            return v
        case ast.Name(id=name):
            if name in env:
                return env[name]
            if name in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[name]
            raise RuleEvalError(f"unknown name {name!r}")
        case ast.List(elts=elts) | ast.Tuple(elts=elts):
            return [evaluate(e, env) for e in elts]
        case ast.UnaryOp(op=ast.USub(), operand=x):
            return -evaluate(x, env)
        case ast.UnaryOp(op=ast.Not(), operand=x):
            return not evaluate(x, env)
        case ast.BoolOp(op=ast.And(), values=values):
            return all(evaluate(v, env) for v in values)
        case ast.BoolOp(op=ast.Or(), values=values):
            return any(evaluate(v, env) for v in values)
        case ast.BinOp(left=a, op=op, right=b) if type(op) in _BINOPS:
            return _BINOPS[type(op)](evaluate(a, env), evaluate(b, env))
        case ast.Compare(left=left, ops=ops, comparators=rest):
            current = evaluate(left, env)
            for op, nxt in zip(ops, rest):
                other = evaluate(nxt, env)
                if not _CMPOPS[type(op)](_plain(current), _plain(other)):
                    return False
                current = other
            return True
        case ast.Subscript(value=v, slice=s):
            return evaluate(v, env)[_index(s, env)]
        case ast.IfExp(test=t, body=b, orelse=o):
            return evaluate(b, env) if evaluate(t, env) else evaluate(o, env)
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in FUNCTIONS:
            return FUNCTIONS[name](*(evaluate(a, env) for a in args))
        case ast.ListComp(
            elt=elt, generators=[ast.comprehension(target=ast.Name(id=var), iter=it, ifs=ifs)]
        ):
            out = []
            for item in evaluate(it, env):
                inner = {**env, var: item}
                if all(evaluate(c, inner) for c in ifs):
                    out.append(evaluate(elt, inner))
            return out
    raise RuleEvalError(f"unsupported expression {ast.unparse(tree)!r}")


def _index(node: ast.expr, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Slice):
        parts = [
            None if p is None else evaluate(p, env) for p in (node.lower, node.upper, node.step)
        ]
        return slice(*parts)
    return evaluate(node, env)


def _plain(x: Any) -> Any:
    """Compare lists and tuples alike (attributes are tuples, expressions build lists)."""
    if isinstance(x, (list, tuple)):
        return [_plain(i) for i in x]
    if isinstance(x, bytes):
        return x.decode()
    return x


# ------------------------------------------------------------------ building rewrites


def _attr_value(raw: Any) -> Any:
    """A Python value as an attribute (lists of ints stay ints, strings become bytes)."""
    if isinstance(raw, np.ndarray):
        raw = raw.tolist()
    if isinstance(raw, (list, tuple)):
        return [int(x) if isinstance(x, (bool, np.integer)) else x for x in raw]
    if isinstance(raw, np.integer):
        return int(raw)
    if isinstance(raw, np.floating):
        return float(raw)
    return raw


def build_node(
    op: str,
    inputs: Sequence[Value | None],
    attrs: Mapping[str, Any],
    *,
    domain: str = "",
    num_outputs: int = 1,
    opset: int | None = None,
) -> Node:
    """Create a node with output types inferred (error when inference fails)."""
    probe = Node.make(op, inputs, attrs, domain=domain, output_types=[UNKNOWN] * num_outputs)
    types = REGISTRY.infer(probe, opset)
    if types is None or len(types) < num_outputs:
        raise RuleEvalError(f"cannot infer the output types of {op}")
    return Node.make(op, inputs, attrs, domain=domain, output_types=types[:num_outputs])


def build_constant(tree: ast.expr, env: Mapping[str, Any]) -> Value:
    """Evaluate ``ints(...)``, ``floats(...)`` or ``scalar(v, like=x)`` into a constant value."""
    if not isinstance(tree, ast.Call) or not isinstance(tree.func, ast.Name):
        raise RuleEvalError(f"not a constant builder: {ast.unparse(tree)}")
    name = tree.func.id
    args = [evaluate(a, env) for a in tree.args]
    kwargs = {k.arg: evaluate(k.value, env) for k in tree.keywords}
    if name == "ints":
        flat = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        return constant(TensorData.from_array(np.array([int(x) for x in flat], np.int64)))
    if name == "floats":
        flat = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        like = kwargs.get("like")
        dt = _ttype(like).dtype.to_numpy() if like is not None else np.float32
        return constant(TensorData.from_array(np.array(flat, dt)))
    if name == "scalar":
        like = kwargs.get("like")
        if like is None:
            raise RuleEvalError("scalar(v, like=x) needs like=")
        kind = _ttype(like).dtype
        return constant(TensorData.from_array(np.array(args[0], kind.to_numpy()), kind))
    raise RuleEvalError(f"unknown constant builder {name!r}")


def instantiate(
    roots: Sequence[Pattern],
    tensors: Mapping[str, Value],
    attrs: Mapping[str, Any],
    *,
    opset: int | None = None,
) -> list[Value]:
    """Build the values of ``roots`` (a rule's rewrite) over the match's bindings."""
    env: dict[str, Any] = {**attrs, **tensors}
    arity: dict[int, int] = {}
    for root in roots:
        _count_outputs(root, arity)
    nodes: dict[int, Node] = {}

    def build(p: Pattern) -> Value:
        if isinstance(p, Var):
            if p.name not in tensors:
                raise RuleEvalError(f"unbound variable {p.name!r}")
            return tensors[p.name]
        if isinstance(p, Build):
            return build_constant(p.tree, env)
        if isinstance(p, Literal):
            raise RuleEvalError("literals are not allowed in a rewrite")
        assert isinstance(p, Op)
        if p.call not in nodes:
            inputs = [build(a) for a in p.args]
            attr_values = {}
            for name, a in p.attrs:
                raw = env[a.name] if isinstance(a, AttrVar) else evaluate(a.tree, env)
                if raw is not None:  # an attribute the match found absent stays absent
                    attr_values[name] = _attr_value(raw)
            nodes[p.call] = build_node(
                p.op, inputs, attr_values, domain=p.domain, num_outputs=arity[p.call], opset=opset
            )
        return nodes[p.call].outputs[p.index]

    try:
        return [build(root) for root in roots]
    finally:
        # A nested function that calls itself is a reference cycle (function -> its cell
        # -> function) holding what it closes over, here the match's graph; searches pause
        # the cyclic collector, so the cell is emptied by hand.
        build = None  # type: ignore[assignment]


def _count_outputs(p: Pattern, arity: dict[int, int]) -> None:
    """Record in ``arity`` how many outputs each call of the rewrite ``p`` uses."""
    if isinstance(p, Op):
        arity[p.call] = max(arity.get(p.call, 1), p.index + 1, p.outputs)
        for a in p.args:
            _count_outputs(a, arity)


def literal_matches(v: Value, lit: Literal) -> bool:
    """Whether a value is a constant filled with the literal's value."""
    return is_const(v) and v.constant.size > 0 and bool(np.all(v.constant.numpy() == lit.value))


def attr_equal(actual: Any, expected: Any) -> bool:
    """Attribute equality across lists/tuples and str/bytes."""
    return _plain(actual) == _plain(expected)


__all__ = [
    "FUNCTIONS",
    "RuleEvalError",
    "attr_equal",
    "build_constant",
    "build_node",
    "evaluate",
    "instantiate",
    "literal_matches",
]
