"""VJP rules of elementwise arithmetic, activations, matrix products, reductions and softmax.

Each rule gets the node, the cotangents ``g`` of its outputs (None where zero) and which inputs
need a cotangent, and returns the cotangents of its inputs (None where not needed). Broadcast
operands get their cotangent summed back to their own shape (:meth:`VJPContext.unbroadcast`).
"""

from __future__ import annotations

import math

import numpy as np

from optimizer.explain.autodiff import vjp_rule
from optimizer.explain.vjp_context import VJPContext
from optimizer.ir import Node, Value

Grads = list["Value | None"]

_LEGACY_BROADCAST = "broadcast"  # attribute of binary ops before opset 7


def _x(node: Node) -> Value:
    return node.inputs[0]  # type: ignore[return-value]


def _y(node: Node) -> Value:
    return node.outputs[0]


def _legacy(ctx: VJPContext, node: Node) -> None:
    if node.attr(_LEGACY_BROADCAST) is not None or ctx.opset < 7:
        raise ctx.fail(node, "legacy (pre-opset-7) broadcasting is not supported")


# ------------------------------------------------------------------- unary elementwise


@vjp_rule("Identity")
def _identity(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    return [g[0]]


@vjp_rule("Dropout")
def _dropout(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    from optimizer.ir.ops import dropout_trains

    mode = node.inputs[2] if len(node.inputs) >= 3 else None
    if dropout_trains(ctx.opset, node.attr("is_test", 0), mode):
        raise ctx.fail(node, "Dropout in training mode is random; export the model in eval mode")
    return [g[0]] + [None] * (len(node.inputs) - 1)


@vjp_rule("Neg")
def _neg(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    return [ctx.neg(g[0])]  # type: ignore[arg-type]


@vjp_rule("Relu")
def _relu(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x = _x(node)
    positive = ctx.emit("Greater", [x, ctx.scalar(0.0, x)])
    return [ctx.where(positive, g[0], ctx.scalar(0.0, g[0]))]  # type: ignore[arg-type]


@vjp_rule("LeakyRelu")
def _leaky_relu(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x, dy = _x(node), g[0]
    alpha = float(node.attr("alpha", 0.01))
    positive = ctx.emit("Greater", [x, ctx.scalar(0.0, x)])
    return [ctx.where(positive, dy, ctx.mul(dy, ctx.scalar(alpha, dy)))]  # type: ignore[arg-type]


@vjp_rule("Sigmoid")
def _sigmoid(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    y = _y(node)
    slope = ctx.mul(y, ctx.sub(ctx.scalar(1.0, y), y))
    return [ctx.mul(g[0], slope)]  # type: ignore[arg-type]


@vjp_rule("Tanh")
def _tanh(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    y = _y(node)
    slope = ctx.sub(ctx.scalar(1.0, y), ctx.mul(y, y))
    return [ctx.mul(g[0], slope)]  # type: ignore[arg-type]


@vjp_rule("Exp")
def _exp(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    return [ctx.mul(g[0], _y(node))]  # type: ignore[arg-type]


@vjp_rule("Log")
def _log(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    return [ctx.div(g[0], _x(node))]  # type: ignore[arg-type]


@vjp_rule("Sqrt")
def _sqrt(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    y = _y(node)
    return [ctx.div(ctx.mul(g[0], ctx.scalar(0.5, y)), y)]  # type: ignore[arg-type]


@vjp_rule("Reciprocal")
def _reciprocal(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    y = _y(node)
    return [ctx.neg(ctx.mul(g[0], ctx.mul(y, y)))]  # type: ignore[arg-type]


@vjp_rule("Abs")
def _abs(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    return [ctx.mul(g[0], ctx.emit("Sign", [_x(node)]))]  # type: ignore[arg-type]


@vjp_rule("Erf")
def _erf(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x = _x(node)
    bell = ctx.emit("Exp", [ctx.neg(ctx.mul(x, x))])
    return [ctx.mul(g[0], ctx.mul(bell, ctx.scalar(2.0 / math.sqrt(math.pi), x)))]  # type: ignore[arg-type]


@vjp_rule("Softplus")
def _softplus(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    return [ctx.mul(g[0], ctx.emit("Sigmoid", [_x(node)]))]  # type: ignore[arg-type]


@vjp_rule("Cast")
def _cast(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    # Only float -> float casts carry a gradient (activity analysis stops at the others).
    return [ctx.cast_like(g[0], _x(node))]  # type: ignore[arg-type]


@vjp_rule("Clip")
def _clip(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x, dy = _x(node), g[0]
    zero = ctx.scalar(0.0, dy)  # type: ignore[arg-type]
    if ctx.opset < 11:
        lo = ctx.scalar(node.attr("min", -3.4028234663852886e38), x)
        hi = ctx.scalar(node.attr("max", 3.4028234663852886e38), x)
    else:
        lo = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] is not None else None
        hi = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] is not None else None
    inside = None
    below = above = None
    if lo is not None:
        below = ctx.emit("Less", [x, lo])
        inside = ctx.emit("Not", [below])
    if hi is not None:
        above = ctx.emit("Greater", [x, hi])
        keep = ctx.emit("Not", [above])
        inside = keep if inside is None else ctx.emit("And", [inside, keep])
    dx = dy if inside is None else ctx.where(inside, dy, zero)  # type: ignore[arg-type]
    out: Grads = [dx]
    if ctx.opset >= 11:
        for k, mask in ((1, below), (2, above)):
            if k < len(node.inputs):
                wanted = need[k] and mask is not None and node.inputs[k] is not None
                if wanted:
                    part = ctx.where(mask, dy, zero)  # type: ignore[arg-type]
                    out.append(ctx.unbroadcast(part, node.inputs[k]))  # type: ignore[arg-type]
                else:
                    out.append(None)
    return out


# ------------------------------------------------------------------- binary elementwise


@vjp_rule("Add")
def _add(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    _legacy(ctx, node)
    a, b = node.inputs
    return [
        ctx.unbroadcast(g[0], a) if need[0] else None,  # type: ignore[arg-type]
        ctx.unbroadcast(g[0], b) if need[1] else None,  # type: ignore[arg-type]
    ]


@vjp_rule("Sub")
def _sub(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    _legacy(ctx, node)
    a, b = node.inputs
    return [
        ctx.unbroadcast(g[0], a) if need[0] else None,  # type: ignore[arg-type]
        ctx.unbroadcast(ctx.neg(g[0]), b) if need[1] else None,  # type: ignore[arg-type]
    ]


@vjp_rule("Mul")
def _mul(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    _legacy(ctx, node)
    a, b = node.inputs
    return [
        ctx.unbroadcast(ctx.mul(g[0], b), a) if need[0] else None,  # type: ignore[arg-type]
        ctx.unbroadcast(ctx.mul(g[0], a), b) if need[1] else None,  # type: ignore[arg-type]
    ]


@vjp_rule("Div")
def _div(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    _legacy(ctx, node)
    a, b = node.inputs
    da = ctx.div(g[0], b) if need[0] else None  # type: ignore[arg-type]
    db = None
    if need[1]:
        # d(a/b)/db = -(a/b)/b
        db = ctx.neg(ctx.div(ctx.mul(g[0], _y(node)), b))  # type: ignore[arg-type]
    return [
        ctx.unbroadcast(da, a) if da is not None else None,  # type: ignore[arg-type]
        ctx.unbroadcast(db, b) if db is not None else None,  # type: ignore[arg-type]
    ]


@vjp_rule("Pow")
def _pow(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    _legacy(ctx, node)
    a, b = node.inputs
    dy = g[0]
    da = db = None
    if need[0]:
        b_float = ctx.cast_like(b, a)  # type: ignore[arg-type]
        if b.constant is not None:  # type: ignore[union-attr]
            exp = b.constant.numpy().astype(a.type.dtype.to_numpy())  # type: ignore[union-attr]
            power = ctx.emit("Pow", [a, ctx.const(exp - 1)])
        else:
            power = ctx.emit("Pow", [a, ctx.sub(b_float, ctx.scalar(1.0, b_float))])
        da = ctx.unbroadcast(ctx.mul(dy, ctx.mul(b_float, power)), a)  # type: ignore[arg-type]
    if need[1]:
        log_a = ctx.emit("Log", [a])
        db = ctx.unbroadcast(ctx.mul(dy, ctx.mul(_y(node), log_a)), b)  # type: ignore[arg-type]
    return [da, db]


@vjp_rule("Where")
def _where(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    cond, a, b = node.inputs
    dy = g[0]
    zero = ctx.scalar(0.0, dy)  # type: ignore[arg-type]
    return [
        None,
        ctx.unbroadcast(ctx.where(cond, dy, zero), a) if need[1] else None,  # type: ignore[arg-type]
        ctx.unbroadcast(ctx.where(cond, zero, dy), b) if need[2] else None,  # type: ignore[arg-type]
    ]


@vjp_rule("Sum")
def _sum(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    return [
        ctx.unbroadcast(g[0], v) if n else None  # type: ignore[arg-type]
        for v, n in zip(node.inputs, need)
    ]


@vjp_rule("Expand")
def _expand(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    return [ctx.unbroadcast(g[0], _x(node)), None]  # type: ignore[arg-type]


# ------------------------------------------------------------------- matrix products


def _swap_last(ctx: VJPContext, x: Value, rank: int) -> Value:
    return ctx.transpose(x, list(range(rank - 2)) + [rank - 1, rank - 2])


@vjp_rule("MatMul")
def _matmul(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    a, b = node.inputs
    dy = g[0]
    ra, rb = ctx.rank(a, node), ctx.rank(b, node)  # type: ignore[arg-type]
    # Promote 1-D operands to matrices (as numpy does), differentiate, then drop the dims again.
    a2 = ctx.unsqueeze(a, [0]) if ra == 1 else a  # type: ignore[arg-type]
    b2 = ctx.unsqueeze(b, [1]) if rb == 1 else b  # type: ignore[arg-type]
    g2 = dy
    if ra == 1:
        g2 = ctx.unsqueeze(g2, [-2 if ctx.rank(dy, node) >= 1 else 0])  # type: ignore[arg-type]
    if rb == 1:
        g2 = ctx.unsqueeze(g2, [-1])  # type: ignore[arg-type]
    r2a, r2b = max(ra, 2), max(rb, 2)
    out: Grads = [None, None]
    if need[0]:
        da = ctx.emit("MatMul", [g2, _swap_last(ctx, b2, r2b)])  # type: ignore[arg-type]
        da = ctx.unbroadcast(da, a2)  # type: ignore[arg-type]
        out[0] = ctx.reshape_like(da, a) if ra == 1 else da  # type: ignore[arg-type]
    if need[1]:
        db = ctx.emit("MatMul", [_swap_last(ctx, a2, r2a), g2])  # type: ignore[arg-type]
        db = ctx.unbroadcast(db, b2)  # type: ignore[arg-type]
        out[1] = ctx.reshape_like(db, b) if rb == 1 else db  # type: ignore[arg-type]
    return out


@vjp_rule("Gemm")
def _gemm(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    if node.attr("broadcast") is not None:
        raise ctx.fail(node, "legacy (pre-opset-7) Gemm broadcasting is not supported")
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    ta, tb = int(node.attr("transA", 0)), int(node.attr("transB", 0))
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    dy = g[0]
    out: Grads = [None, None, None][: len(node.inputs)]
    # y = alpha * op(A) op(B) + beta * C, with op() a transpose where the flag says so.
    if need[0]:
        if not ta:
            out[0] = ctx.emit("Gemm", [dy, b], {"alpha": alpha, "transB": 1 - tb})
        else:
            out[0] = ctx.emit("Gemm", [b, dy], {"alpha": alpha, "transA": tb, "transB": 1})
    if need[1]:
        if not tb:
            out[1] = ctx.emit("Gemm", [a, dy], {"alpha": alpha, "transA": 1 - ta})
        else:
            out[1] = ctx.emit("Gemm", [dy, a], {"alpha": alpha, "transA": 1, "transB": ta})
    if c is not None and need[2]:
        scaled = dy if beta == 1.0 else ctx.mul(dy, ctx.scalar(beta, dy))  # type: ignore[arg-type]
        out[2] = ctx.unbroadcast(scaled, c)  # type: ignore[arg-type]
    return out


# ------------------------------------------------------------------- reductions


def reduce_axes(ctx: VJPContext, node: Node, rank: int, since: int) -> list[int] | None:
    """The normalized axes a Reduce* node reduces (None: it is the identity)."""
    if ctx.opset >= since:
        axes_in = node.inputs[1] if len(node.inputs) > 1 else None
        if axes_in is not None and axes_in.constant is None:
            raise ctx.fail(node, "the reduction axes must be constants")
        axes = [] if axes_in is None else [int(a) for a in axes_in.constant.numpy().reshape(-1)]  # type: ignore[union-attr]
        if not axes and node.attr("noop_with_empty_axes", 0):
            return None
    else:
        axes = list(node.attr("axes") or [])
    if not axes:
        return list(range(rank))
    return sorted(a % rank for a in axes)


_AXES_INPUT_SINCE = {"ReduceSum": 13}  # every other Reduce* op: opset 18


def _spread(ctx: VJPContext, node: Node, dy: Value) -> tuple[Value, list[int] | None]:
    """The cotangent of a reduction broadcast back over its input (before any scaling)."""
    x = _x(node)
    rank = ctx.rank(x, node)
    axes = reduce_axes(ctx, node, rank, _AXES_INPUT_SINCE.get(node.op, 18))
    if axes is None:
        return dy, None
    if not node.attr("keepdims", 1):
        dy = ctx.unsqueeze(dy, axes)
    return ctx.expand_like(dy, x), axes


@vjp_rule("ReduceSum")
def _reduce_sum(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    dx, _ = _spread(ctx, node, g[0])  # type: ignore[arg-type]
    return [dx] + [None] * (len(node.inputs) - 1)


@vjp_rule("ReduceMean")
def _reduce_mean(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x, dy = _x(node), g[0]
    dx, axes = _spread(ctx, node, dy)  # type: ignore[arg-type]
    if axes is not None:
        shape = ctx.static_shape(x)
        if shape is not None:
            count = ctx.scalar(float(np.prod([shape[a] for a in axes])), dy)  # type: ignore[arg-type]
        else:
            sizes = [ctx.emit("Size", [v]) for v in (x, _y(node))]
            ratio = ctx.div(*sizes)
            count = ctx.cast_like(ratio, dy)  # type: ignore[arg-type]
        dx = ctx.div(dx, count)
    return [dx] + [None] * (len(node.inputs) - 1)


@vjp_rule("ReduceMax", "ReduceMin")
def _reduce_extremum(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x = _x(node)
    dx, axes = _spread(ctx, node, g[0])  # type: ignore[arg-type]
    if axes is not None:
        y = _y(node)
        y_kept = y if node.attr("keepdims", 1) else ctx.unsqueeze(y, axes)
        hit = ctx.cast_like(ctx.emit("Equal", [x, y_kept]), x)
        # Ties share the cotangent equally (as torch's amax/amin).
        ties = ctx.reduce_sum(hit, axes, keepdims=True)
        dx = ctx.mul(dx, ctx.div(hit, ties))
    return [dx] + [None] * (len(node.inputs) - 1)


# ------------------------------------------------------------------- softmax


def _softmax_axes(ctx: VJPContext, node: Node) -> list[int]:
    rank = ctx.rank(_x(node), node)
    if ctx.opset >= 13:
        return [int(node.attr("axis", -1)) % rank]
    # Before opset 13 the input is coerced to 2-D at ``axis``: normalized over all later dims.
    return list(range(int(node.attr("axis", 1)) % rank, rank))


@vjp_rule("Softmax")
def _softmax(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    y, dy = _y(node), g[0]
    inner = ctx.reduce_sum(ctx.mul(dy, y), _softmax_axes(ctx, node), keepdims=True)  # type: ignore[arg-type]
    return [ctx.mul(y, ctx.sub(dy, inner))]  # type: ignore[arg-type]


@vjp_rule("LogSoftmax")
def _log_softmax(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    y, dy = _y(node), g[0]
    total = ctx.reduce_sum(dy, _softmax_axes(ctx, node), keepdims=True)  # type: ignore[arg-type]
    return [ctx.sub(dy, ctx.mul(ctx.emit("Exp", [y]), total))]  # type: ignore[arg-type]
