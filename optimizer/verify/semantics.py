"""Elementwise semantics of ONNX ops over numpy object arrays of arith scalars.

Each entry of :data:`SEMANTICS` maps ``(node, inputs, arith)`` to the node's
outputs. Inputs are object arrays of scalars of the arith (see
:mod:`optimizer.verify.arith`); integer tensors that steer an op (shapes, axes,
indices, split sizes) must be concrete. The same functions serve proofs
(symbolic scalars) and tests against onnxruntime (float scalars).

:func:`evaluate` runs a set of IR values bottom-up. Tensor-layout ops live in
this module; convolution, pooling and normalisation in
:mod:`optimizer.verify.semantics_nn`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from optimizer.ir import DType, Node, TensorType, Value
from optimizer.ir.ops import cast_target
from optimizer.verify.arith import Unencodable

Array = np.ndarray
SemanticsFn = Callable[[Node, list, Any], list]
SEMANTICS: dict[str, SemanticsFn] = {}


def op(*names: str):
    """Register a semantics function for ``names``."""

    def deco(f: SemanticsFn) -> SemanticsFn:
        for n in names:
            SEMANTICS[n] = f
        return f

    return deco


# ---------------------------------------------------------------- helpers


def obj(x: Any, shape: tuple[int, ...] | None = None) -> Array:
    """``x`` as an object array (a scalar becomes 0-d, never iterated)."""
    if isinstance(x, np.ndarray):
        return x.astype(object) if x.dtype != object else x
    out = np.empty((), dtype=object)
    out[()] = x
    return out if shape is None else np.broadcast_to(out, shape).copy()


def ew(f: Callable, *arrays: Array) -> Array:
    """Apply a scalar function elementwise with numpy broadcasting."""
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    bs = [np.broadcast_to(a, shape) for a in arrays]
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = f(*(b[idx] for b in bs))
    return out


def ints(a: Array | None, what: str = "value") -> list[int]:
    """A concrete integer tensor as a flat list."""
    if a is None:
        return []
    try:
        return [int(x) for x in np.asarray(a).reshape(-1)]
    except TypeError:
        raise Unencodable(f"{what} must be a constant integer tensor") from None


def attr(node: Node, name: str, default: Any = None) -> Any:
    v = node.attr(name, default)
    return v.decode() if isinstance(v, bytes) else v


def axes_of(node: Node, ins: list, index: int, rank: int) -> list[int] | None:
    """``axes`` from the attribute (old opsets) or the input at ``index``; None when absent."""
    axes = node.attr("axes")
    if axes is None and len(ins) > index and ins[index] is not None:
        axes = ints(ins[index], "axes")
    if axes is None:
        return None
    return sorted({int(a) % rank if rank else 0 for a in axes})


def reduce_axes(x: Array, axes: Sequence[int], keepdims: bool, combine: Callable) -> Array:
    """Fold ``combine`` over ``axes`` of ``x``."""
    axes = sorted(set(axes))
    rest = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, rest + axes)
    kept_shape = tuple(x.shape[i] for i in rest)
    flat = moved.reshape(kept_shape + (-1,))
    out = np.empty(kept_shape, dtype=object)
    for idx in np.ndindex(*kept_shape):
        items = list(flat[idx])
        acc = items[0]
        for item in items[1:]:
            acc = combine(acc, item)
        out[idx] = acc
    if keepdims:
        out = out.reshape(tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    return out


def _add(a, b):
    return a + b


def _mul(a, b):
    return a * b


# ---------------------------------------------------------------- elementwise


def _unary(f: Callable[[Any, Any], Any]) -> SemanticsFn:
    def sem(node: Node, ins: list, ar) -> list:
        return [ew(lambda x: f(ar, x), ins[0])]

    return sem


_UNARY = {
    "Identity": lambda ar, x: x,
    "Neg": lambda ar, x: -x,
    "Abs": lambda ar, x: ar.abs(x),
    "Relu": lambda ar, x: ar.relu(x),
    "Exp": lambda ar, x: ar.exp(x),
    "Log": lambda ar, x: ar.func("log", x),
    "Sqrt": lambda ar, x: ar.sqrt(x),
    "Tanh": lambda ar, x: ar.func("tanh", x),
    "Erf": lambda ar, x: ar.func("erf", x),
    "Floor": lambda ar, x: ar.func("floor", x),
    "Ceil": lambda ar, x: ar.func("ceil", x),
    "Sin": lambda ar, x: ar.func("sin", x),
    "Cos": lambda ar, x: ar.func("cos", x),
    "Reciprocal": lambda ar, x: ar.div(1, x),
    "Sigmoid": lambda ar, x: ar.div(1, 1 + ar.exp(-x)),
    "Softplus": lambda ar, x: ar.func("log", 1 + ar.exp(x)),
    "Sign": lambda ar, x: ar.ite(ar.gt(x, 0), 1, ar.ite(ar.lt(x, 0), -1, 0)),
    "Not": lambda ar, x: ar.not_(x),
}
for _name, _f in _UNARY.items():
    SEMANTICS[_name] = _unary(_f)


@op("LeakyRelu")
def _leaky(node, ins, ar):
    alpha = ar.const(np.float32(attr(node, "alpha", 0.01)))
    return [ew(lambda x: ar.ite(ar.ge(x, 0), x, alpha * x), ins[0])]


@op("Elu")
def _elu(node, ins, ar):
    alpha = ar.const(np.float32(attr(node, "alpha", 1.0)))
    return [ew(lambda x: ar.ite(ar.ge(x, 0), x, alpha * (ar.exp(x) - 1)), ins[0])]


@op("HardSigmoid")
def _hard_sigmoid(node, ins, ar):
    alpha = ar.const(np.float32(attr(node, "alpha", 0.2)))
    beta = ar.const(np.float32(attr(node, "beta", 0.5)))
    return [ew(lambda x: ar.max(0, ar.min(1, alpha * x + beta)), ins[0])]


@op("HardSwish")
def _hard_swish(node, ins, ar):
    alpha, beta = ar.const(np.float32(1 / 6)), ar.const(0.5)
    return [ew(lambda x: x * ar.max(0, ar.min(1, alpha * x + beta)), ins[0])]


@op("Gelu")
def _gelu(node, ins, ar):
    if attr(node, "approximate", "none") == "tanh":
        k, c = ar.const(np.float32(0.7978845608028654)), ar.const(np.float32(0.044715))

        def f(x):
            return ar.const(0.5) * x * (1 + ar.func("tanh", k * (x + c * x * x * x)))
    else:
        root2 = ar.const(np.float32(1.4142135623730951))

        def f(x):
            return ar.const(0.5) * x * (1 + ar.func("erf", ar.div(x, root2)))

    return [ew(f, ins[0])]


@op("Clip")
def _clip(node, ins, ar):
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else node.attr("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else node.attr("max")
    x = ins[0]
    if lo is not None:
        lo = obj(ar.const(np.float32(lo))) if isinstance(lo, float) else lo
        x = ew(ar.max, x, lo)
    if hi is not None:
        hi = obj(ar.const(np.float32(hi))) if isinstance(hi, float) else hi
        x = ew(ar.min, x, hi)
    return [x]


@op("Dropout")
def _dropout(node, ins, ar):
    # Inference: a copy (the importer keeps training-mode dropout opaque); the mask is all true.
    outs = [ins[0]]
    if len(node.outputs) > 1:
        outs.append(obj(True, ins[0].shape))
    return outs


@op("Cast", "CastLike")
def _cast(node, ins, ar):
    """Exact casts are the identity. Others are a function of the real value named by the
    destination type alone (rounding to float32 is one function whatever the source), so that
    two casts to the same type agree."""
    src = node.inputs[0].type.dtype
    dst = node.inputs[1].type.dtype if node.op == "CastLike" else cast_target(node)
    if src == DType.BOOL and dst != DType.BOOL:
        return [ew(lambda b: ar.ite(b, ar.const(1.0), ar.const(0.0)), ins[0])]
    if _exact_cast(src, dst):
        return [ins[0]]
    if dst == DType.BOOL:
        return [ew(lambda x: ar.not_(ar.eq(x, 0)), ins[0])]
    if dst in _CAST_FUNCTION:
        name = _CAST_FUNCTION[dst]
        return [ew(lambda x: ar.func(name, x), ins[0])]
    raise Unencodable(f"Cast {src.name} -> {dst.name}")


_WIDTH = {DType.FLOAT16: 1, DType.FLOAT: 2, DType.DOUBLE: 3}
_INT_BITS = {
    DType.INT8: 8,
    DType.INT16: 16,
    DType.INT32: 32,
    DType.INT64: 64,
    DType.UINT8: 8,
    DType.UINT16: 16,
    DType.UINT32: 32,
    DType.UINT64: 64,
}
_MANTISSA = {DType.FLOAT16: 11, DType.FLOAT: 24, DType.DOUBLE: 53}


_CAST_FUNCTION = {
    DType.FLOAT16: "round_float16",
    DType.FLOAT: "round_float32",
    DType.DOUBLE: "round_float64",
    **{d: f"cast_to_{d.name.lower()}" for d in _INT_BITS},
}


def _exact_cast(src: DType, dst: DType) -> bool:
    """Whether every value of ``src`` is a value of ``dst`` (the cast changes nothing)."""
    if src == dst:
        return True
    if src in _WIDTH and dst in _WIDTH:
        return _WIDTH[dst] >= _WIDTH[src]
    if src in _INT_BITS and dst in _MANTISSA:
        return _INT_BITS[src] <= _MANTISSA[dst]
    if src in _INT_BITS and dst in _INT_BITS:
        signed = lambda d: d.name.startswith("INT")  # noqa: E731
        if signed(src) == signed(dst):
            return _INT_BITS[dst] >= _INT_BITS[src]
        return not signed(src) and _INT_BITS[dst] > _INT_BITS[src]
    return src == DType.BOOL and dst in (_INT_BITS.keys() | _MANTISSA.keys())


def _binary(f: Callable[[Any, Any, Any], Any]) -> SemanticsFn:
    def sem(node: Node, ins: list, ar) -> list:
        return [ew(lambda a, b: f(ar, a, b), ins[0], ins[1])]

    return sem


_BINARY = {
    "Add": lambda ar, a, b: a + b,
    "Sub": lambda ar, a, b: a - b,
    "Mul": lambda ar, a, b: a * b,
    "Div": lambda ar, a, b: ar.div(a, b),
    "Equal": lambda ar, a, b: ar.eq(a, b),
    "Less": lambda ar, a, b: ar.lt(a, b),
    "Greater": lambda ar, a, b: ar.gt(a, b),
    "LessOrEqual": lambda ar, a, b: ar.le(a, b),
    "GreaterOrEqual": lambda ar, a, b: ar.ge(a, b),
    "And": lambda ar, a, b: ar.and_(a, b),
    "Or": lambda ar, a, b: ar.or_(a, b),
    "Xor": lambda ar, a, b: ar.not_(ar.eq(a, b)),
    "PRelu": lambda ar, a, b: ar.ite(ar.ge(a, 0), a, a * b),
}
for _name, _f in _BINARY.items():
    SEMANTICS[_name] = _binary(_f)


def _integer_division(node, ins, ar):
    t = node.inputs[0].type
    if isinstance(t, TensorType) and not t.dtype.is_float:
        raise Unencodable("integer Div (truncating) has no real-number encoding")
    return _binary(_BINARY["Div"])(node, ins, ar)


SEMANTICS["Div"] = _integer_division


@op("Pow")
def _pow(node, ins, ar):
    base, exponent = ins
    try:
        exps = [_concrete(e) for e in np.asarray(exponent).reshape(-1)]
    except (TypeError, ValueError):
        exps = None
    if exps is not None and all(e.is_integer() and abs(e) <= 8 for e in exps):
        return [ew(lambda a, e: _ipow(ar, a, int(_concrete(e))), base, exponent)]
    if exps is not None and all(e == 0.5 for e in exps):
        return [ew(lambda a, e: ar.sqrt(a), base, exponent)]
    return [ew(lambda a, e: ar.func("pow", a, e), base, exponent)]


def _concrete(x) -> float:
    """A scalar's number (symbolic constants included); TypeError/ValueError when symbolic."""
    if hasattr(x, "is_const"):
        return float(x.value)
    return float(x)


def _ipow(ar, a, k: int):
    out = ar.const(1.0)
    for _ in range(abs(k)):
        out = out * a
    return ar.div(1, out) if k < 0 else out


@op("Max", "Min", "Sum", "Mean")
def _variadic(node, ins, ar):
    combine = {"Max": ar.max, "Min": ar.min}.get(node.op, _add)
    acc = ins[0]
    for x in ins[1:]:
        acc = ew(combine, acc, x)
    if node.op == "Mean":
        k = ar.const(len(ins))
        acc = ew(lambda s: ar.div(s, k), acc)
    return [acc]


@op("Where")
def _where(node, ins, ar):
    return [ew(ar.ite, ins[0], ins[1], ins[2])]


# ---------------------------------------------------------------- linear algebra


@op("MatMul")
def _matmul(node, ins, ar):
    return [obj(np.matmul(ins[0], ins[1]))]


@op("Gemm")
def _gemm(node, ins, ar):
    a, b = ins[0], ins[1]
    a = a.T if attr(node, "transA", 0) else a
    b = b.T if attr(node, "transB", 0) else b
    out = np.matmul(a, b)
    alpha = float(attr(node, "alpha", 1.0))
    if alpha != 1.0:
        k = ar.const(np.float32(alpha))
        out = ew(lambda v: k * v, obj(out))
    if len(ins) > 2 and ins[2] is not None:
        beta = float(attr(node, "beta", 1.0))
        k = ar.const(np.float32(beta))
        c = ins[2] if beta == 1.0 else ew(lambda v: k * v, ins[2])
        out = ew(_add, obj(out), c)
    return [obj(out)]


# ---------------------------------------------------------------- reductions


def _reduce(combine_name: str):
    def sem(node, ins, ar):
        x = ins[0]
        axes = axes_of(node, ins, 1, x.ndim)
        if not axes:
            if axes is not None and attr(node, "noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.ndim))
        keep = bool(attr(node, "keepdims", 1))
        if x.ndim == 0:
            return [x]
        if combine_name in ("Max", "Min"):
            return [reduce_axes(x, axes, keep, ar.max if combine_name == "Max" else ar.min)]
        if combine_name == "Prod":
            return [reduce_axes(x, axes, keep, _mul)]
        if combine_name in ("SumSquare", "L2"):
            x = ew(lambda v: v * v, x)
        out = reduce_axes(x, axes, keep, _add)
        if combine_name == "Mean":
            n = ar.const(int(np.prod([x.shape[a] for a in axes])))
            out = ew(lambda s: ar.div(s, n), out)
        if combine_name == "L2":
            out = ew(ar.sqrt, out)
        return [out]

    return sem


for _kind in ("Sum", "Mean", "Max", "Min", "Prod", "SumSquare", "L2"):
    SEMANTICS[f"Reduce{_kind}"] = _reduce(_kind)


# ---------------------------------------------------------------- layout


@op("Transpose")
def _transpose(node, ins, ar):
    perm = node.attr("perm")
    return [np.transpose(ins[0], None if perm is None else list(perm))]


@op("Reshape")
def _reshape(node, ins, ar):
    x = ins[0]
    target = ints(ins[1], "Reshape's shape") if len(ins) > 1 else list(node.attr("shape"))
    if not attr(node, "allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return [x.reshape(target)]


@op("Flatten")
def _flatten(node, ins, ar):
    x = ins[0]
    axis = attr(node, "axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    lead = int(np.prod(x.shape[:axis]))
    return [x.reshape(lead, -1) if x.size else x.reshape(lead, 0)]


@op("Squeeze", "Unsqueeze")
def _squeeze(node, ins, ar):
    out_shape = node.outputs[0].type.shape
    return [ins[0].reshape(out_shape)]


@op("Concat")
def _concat(node, ins, ar):
    return [np.concatenate(ins, axis=attr(node, "axis", 1))]


@op("Split")
def _split(node, ins, ar):
    x = ins[0]
    axis = attr(node, "axis", 0) % x.ndim
    sizes = node.attr("split")
    if sizes is None and len(ins) > 1 and ins[1] is not None:
        sizes = ints(ins[1], "Split's sizes")
    n = len(node.outputs)
    if sizes is None:
        chunk = -(-x.shape[axis] // n)
        sizes = [min(chunk, x.shape[axis] - chunk * i) for i in range(n)]
    bounds = np.cumsum(sizes)[:-1]
    return list(np.split(x, bounds, axis=axis))


@op("Slice")
def _slice(node, ins, ar):
    x = ins[0]
    starts, ends = ints(ins[1], "starts"), ints(ins[2], "ends")
    axes = ints(ins[3], "axes") if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = ints(ins[4], "steps") if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        dim = x.shape[a]
        lo, hi = (0, dim) if st > 0 else (-1, dim - 1)
        s = max(lo, min(hi, s + dim if s < 0 else s))
        e = max(lo, min(hi, e + dim if e < 0 else e))
        index[a % x.ndim] = slice(s, e if e >= 0 else None, st)
    return [x[tuple(index)]]


@op("Gather")
def _gather(node, ins, ar):
    idx = np.asarray(ints(ins[1], "Gather's indices")).reshape(np.asarray(ins[1]).shape)
    axis = attr(node, "axis", 0)
    dim = ins[0].shape[axis]
    idx = np.where(idx < 0, idx + dim, idx)
    return [np.take(ins[0], idx, axis=axis)]


@op("Expand")
def _expand(node, ins, ar):
    shape = ints(ins[1], "Expand's shape")
    target = np.broadcast_shapes(ins[0].shape, tuple(shape))
    return [np.broadcast_to(ins[0], target).copy()]


@op("Tile")
def _tile(node, ins, ar):
    return [np.tile(ins[0], ints(ins[1], "Tile's repeats"))]


@op("Pad")
def _pad(node, ins, ar):
    x = ins[0]
    mode = attr(node, "mode", "constant")
    if mode != "constant":
        raise Unencodable(f"Pad mode {mode!r}")
    pads = ints(ins[1], "pads") if len(ins) > 1 else list(node.attr("pads"))
    if len(ins) > 2 and ins[2] is not None and np.asarray(ins[2]).size:
        fill = np.asarray(ins[2]).reshape(-1)[0]
    else:
        fill = ar.const(np.float32(attr(node, "value", 0.0)))
    axes = ints(ins[3], "axes") if len(ins) > 3 and ins[3] is not None else list(range(x.ndim))
    half = len(axes)
    widths = [(0, 0)] * x.ndim
    for k, a in enumerate(axes):
        widths[a % x.ndim] = (pads[k], pads[k + half])
    # Negative pads crop: first remove them from x, then pad with the positive ones.
    x = x[tuple(slice(max(0, -lo), d - max(0, -hi)) for d, (lo, hi) in zip(x.shape, widths))]
    widths = [(max(0, lo), max(0, hi)) for lo, hi in widths]
    out_shape = tuple(d + lo + hi for d, (lo, hi) in zip(x.shape, widths, strict=False))
    out = obj(fill, out_shape)
    out[tuple(slice(lo, lo + d) for d, (lo, _) in zip(x.shape, widths, strict=False))] = x
    return [out]


@op("Shape")
def _shape(node, ins, ar):
    shape = node.inputs[0].type.shape
    r = len(shape)
    start, end = attr(node, "start", 0), attr(node, "end", r)
    start, end = (max(0, min(r, v + r if v < 0 else v)) for v in (start, end))
    return [obj(np.array(shape[start:end], dtype=object))]


@op("Size")
def _size(node, ins, ar):
    return [obj(int(np.prod(node.inputs[0].type.shape)))]


# ---------------------------------------------------------------- evaluation


def constant_array(value: Value, ar) -> Array:
    """A constant's data as an object array of arith scalars (integers stay Python ints)."""
    data = value.constant.numpy()
    out = np.empty(data.shape, dtype=object)
    if data.dtype.kind in "iub":
        for idx in np.ndindex(*data.shape):
            out[idx] = bool(data[idx]) if data.dtype.kind == "b" else int(data[idx])
        return out
    for idx in np.ndindex(*data.shape):
        out[idx] = ar.const(data[idx])
    return out


def evaluate(outputs: Sequence[Value], env: Mapping[Value, Array], ar) -> list[Array]:
    """The values of ``outputs`` given arrays for inputs (and constants to treat symbolically)."""
    from optimizer.verify import semantics_nn  # noqa: F401 - registers the nn ops

    memo: dict[Value, Array] = dict(env)

    def value_of(v: Value) -> Array:
        if v in memo:
            return memo[v]
        node = v.node
        if node.is_constant:
            memo[v] = constant_array(v, ar)
            return memo[v]
        if node.is_input:
            raise Unencodable(f"no value bound for input {v.input_name!r}")
        stack = [node]
        while stack:  # iterative post-order, to survive deep graphs
            current = stack[-1]
            pending = [
                i
                for i in current.inputs
                if i is not None and i not in memo and not i.node.is_source
            ]
            if pending:
                stack.extend(p.node for p in pending)
                continue
            stack.pop()
            if current.outputs[0] in memo:
                continue
            run_node(
                current, [None if i is None else value_of(i) for i in current.inputs], ar, memo
            )
        return memo[v]

    return [value_of(v) for v in outputs]


class SemanticsShapeError(ValueError):
    """An op's semantics and its inferred output type disagree on a shape: the instance is
    outside the op's domain (a lenient type function accepted it), or a semantics bug."""


def run_node(node: Node, inputs: list, ar, memo: dict[Value, Array] | None = None) -> list[Array]:
    """Apply one node's semantics and check the result shapes against its output types."""
    if node.domain not in ("", "ai.onnx"):
        raise Unencodable(f"no semantics for {node.domain}::{node.op}")
    fn = SEMANTICS.get(node.op)
    if fn is None:
        raise Unencodable(f"no semantics for {node.op}")
    outs = fn(node, inputs, ar)
    outs = [obj(o) for o in outs]
    for value, out in zip(node.outputs, outs, strict=False):
        t = value.type
        static = (
            isinstance(t, TensorType)
            and t.shape is not None
            and all(isinstance(d, int) for d in t.shape)
        )
        if static and tuple(t.shape) != out.shape:
            raise SemanticsShapeError(f"{node.op} semantics gave shape {out.shape}, type says {t}")
        if memo is not None:
            memo[value] = out
    return outs


def supported_ops() -> list[str]:
    """Every op name with semantics."""
    from optimizer.verify import semantics_nn  # noqa: F401

    return sorted(SEMANTICS)
