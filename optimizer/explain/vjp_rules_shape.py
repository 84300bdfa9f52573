"""VJP rules of data-movement ops: reshapes, Transpose, Concat, Split, Slice, Pad, Gather.

Their cotangents move data back to where it came from: a reshape back, the inverse
permutation, slices of the cotangent for each Concat operand, zero padding around a Slice,
and a scatter-add for Gather (indices may repeat, e.g. one embedding row read twice).
"""

from __future__ import annotations

import numpy as np

from optimizer.explain.autodiff import vjp_rule
from optimizer.explain.vjp_context import VJPContext
from optimizer.ir import Node, Value

Grads = list["Value | None"]

#: Slice bounds at or beyond this mean "to the end" (exporters write INT64_MAX or INT32_MAX).
_TO_END = 2**31 - 1


@vjp_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    return [ctx.reshape_like(g[0], node.inputs[0])] + [None] * (len(node.inputs) - 1)  # type: ignore[arg-type]


@vjp_rule("Transpose")
def _transpose(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    rank = ctx.rank(node.inputs[0], node)  # type: ignore[arg-type]
    perm = list(node.attr("perm") or reversed(range(rank)))
    inverse = [0] * rank
    for i, p in enumerate(perm):
        inverse[p] = i
    return [ctx.transpose(g[0], inverse)]  # type: ignore[arg-type]


def _slice_axis(
    ctx: VJPContext, x: Value, axis: int, start: Value | int, end: Value | int
) -> Value:
    if ctx.opset < 10:
        return ctx.emit("Slice", [x], {"starts": [start], "ends": [end], "axes": [axis]})
    s = ctx.ints([start]) if isinstance(start, int) else start
    e = ctx.ints([end]) if isinstance(end, int) else end
    return ctx.emit("Slice", [x, s, e, ctx.ints([axis])])


@vjp_rule("Concat")
def _concat(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    dy = g[0]
    rank = ctx.rank(node.inputs[0], node)  # type: ignore[arg-type]
    axis = int(node.attr("axis", 1)) % rank
    sizes = [ctx.shape_of(v)[axis] for v in node.inputs]  # type: ignore[index]
    out: Grads = []
    if all(isinstance(s, int) for s in sizes):
        offset = 0
        for size, n in zip(sizes, need):
            out.append(_slice_axis(ctx, dy, axis, offset, offset + size) if n else None)  # type: ignore[arg-type,operator]
            offset += size  # type: ignore[operator]
        return out
    if ctx.opset < 13:
        raise ctx.fail(node, "operands with symbolic sizes need opset 13 or later")
    # Symbolic sizes: split the cotangent at the runtime sizes of the operands.
    dims = [
        ctx.emit("Slice", [ctx.shape(v), ctx.ints([axis]), ctx.ints([axis + 1])])  # type: ignore[arg-type]
        for v in node.inputs
    ]
    split_sizes = ctx.emit("Concat", dims, {"axis": 0})
    parts = ctx.node_outputs("Split", [dy, split_sizes], {"axis": axis}, outputs=len(dims))
    return [p if n else None for p, n in zip(parts, need)]


@vjp_rule("Split")
def _split(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x = node.inputs[0]
    rank = ctx.rank(x, node)  # type: ignore[arg-type]
    axis = int(node.attr("axis", 0)) % rank
    parts = [d if d is not None else ctx.zeros_like(o) for d, o in zip(g, node.outputs)]
    joined = ctx.emit("Concat", parts, {"axis": axis}, type=ctx.like(parts[0], x))  # type: ignore[arg-type]
    return [joined] + [None] * (len(node.inputs) - 1)


def _const_list(ctx: VJPContext, node: Node, index: int, what: str) -> list[int] | None:
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    value = node.inputs[index]
    if value.constant is None:  # type: ignore[union-attr]
        raise ctx.fail(node, f"the {what} must be constants")
    return [int(v) for v in value.constant.numpy().reshape(-1)]  # type: ignore[union-attr]


def _scatter_axis(ctx: VJPContext, g: Value, axis: int, rank: int, picked, size: int) -> Value:
    """Place the entries of ``g`` along ``axis`` at positions ``picked`` of a zero axis of
    length ``size``: a product with a constant 0/1 selection matrix (handles any step)."""
    select = np.zeros((len(picked), size), dtype=g.type.dtype.to_numpy())
    select[np.arange(len(picked)), picked] = 1
    last = list(range(rank))
    last.remove(axis)
    last.append(axis)
    moved = ctx.transpose(g, last)
    spread = ctx.emit("MatMul", [moved, ctx.const(select)])
    back = [0] * rank
    for i, p in enumerate(last):
        back[p] = i
    return ctx.transpose(spread, back)


@vjp_rule("Slice")
def _slice(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x, dy = node.inputs[0], g[0]
    rank = ctx.rank(x, node)  # type: ignore[arg-type]
    shape = ctx.shape_of(x)  # type: ignore[arg-type]
    if ctx.opset < 10:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes = list(node.attr("axes") or range(len(starts)))
        steps = [1] * len(starts)
    else:
        starts = _const_list(ctx, node, 1, "Slice starts")
        ends = _const_list(ctx, node, 2, "Slice ends")
        axes = _const_list(ctx, node, 3, "Slice axes") or list(range(len(starts)))  # type: ignore[arg-type]
        steps = _const_list(ctx, node, 4, "Slice steps") or [1] * len(starts)  # type: ignore[arg-type]
    begin, end = [0] * rank, [0] * rank
    result = dy
    for start, stop, axis, step in zip(starts, ends, axes, steps):  # type: ignore[arg-type]
        axis %= rank
        dim = shape[axis]  # type: ignore[index]
        if isinstance(dim, int):
            picked = range(*slice(start, stop, step).indices(dim))
            if step == 1:
                begin[axis] = picked.start if len(picked) else 0
                end[axis] = dim - begin[axis] - len(picked)
            else:
                result = _scatter_axis(ctx, result, axis, rank, list(picked), dim)  # type: ignore[arg-type]
        elif step == 1 and start >= 0 and (stop >= _TO_END or stop < 0):
            # A symbolic dim sliced [start:] or [start:-k]: pad start before and k after.
            begin[axis], end[axis] = start, 0 if stop >= _TO_END else -stop
        else:
            raise ctx.fail(node, f"slicing symbolic dim {axis} this way needs a static shape")
    padded = ctx.pad(result, begin, end, type=ctx.like(dy, x))  # type: ignore[arg-type]
    return [padded] + [None] * (len(node.inputs) - 1)


@vjp_rule("Pad")
def _pad_rule(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x, dy = node.inputs[0], g[0]
    rank = ctx.rank(x, node)  # type: ignore[arg-type]
    mode = (node.attr("mode") or b"constant").decode()
    if mode != "constant":
        raise ctx.fail(node, f"only constant padding is supported, not {mode!r}")
    pads = list(node.attr("pads")) if ctx.opset < 11 else _const_list(ctx, node, 1, "pads")
    axes = _const_list(ctx, node, 3, "Pad axes") if ctx.opset >= 18 else None
    axes = [a % rank for a in axes] if axes else list(range(rank))
    n = len(axes)
    if any(p < 0 for p in pads):  # type: ignore[union-attr]
        raise ctx.fail(node, "negative pads (cropping) are not supported")
    result = dy
    for i, axis in enumerate(axes):
        lo, hi = pads[i], pads[n + i]  # type: ignore[index]
        if lo or hi:
            result = _slice_axis(ctx, result, axis, lo, -hi if hi else _TO_END)  # type: ignore[arg-type]
    return [ctx.emit("Identity", [result], type=ctx.like(dy, x))] + [None] * (len(node.inputs) - 1)  # type: ignore[arg-type]


@vjp_rule("Gather")
def _gather(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    data, indices = node.inputs
    dy = g[0]
    if ctx.opset < 16:
        raise ctx.fail(
            node, "needs opset 16 or later (ScatterElements with reduction); convert the model"
        )
    rank = ctx.rank(data, node)  # type: ignore[arg-type]
    axis = int(node.attr("axis", 0)) % rank
    placed = _gather_by_padding(ctx, node, dy, data, indices, axis, rank)  # type: ignore[arg-type]
    if placed is not None:
        return [placed, None]
    # dy has shape data[:axis] + indices.shape + data[axis+1:]: flatten the index dims into
    # one, broadcast the indices to that shape, and scatter-add into zeros shaped like data.
    dshape = ctx.shape(data)  # type: ignore[arg-type]
    head = ctx.emit("Slice", [dshape, ctx.ints([0]), ctx.ints([axis])])
    tail = ctx.emit("Slice", [dshape, ctx.ints([axis + 1]), ctx.ints([_TO_END])])
    flat_shape = ctx.emit("Concat", [head, ctx.ints([-1]), tail], {"axis": 0})
    updates = ctx.reshape(dy, flat_shape)  # type: ignore[arg-type]
    idx_shape = [1] * axis + [-1] + [1] * (rank - axis - 1)
    idx = ctx.reshape(indices, ctx.ints(idx_shape))  # type: ignore[arg-type]
    idx = ctx.emit("Expand", [idx, ctx.shape(updates)])
    scattered = ctx.emit(
        "ScatterElements",
        [ctx.zeros_like(data), idx, updates],  # type: ignore[arg-type]
        {"axis": axis, "reduction": "add"},
        type=ctx.like(dy, data),  # type: ignore[arg-type]
    )
    return [scattered, None]


def _gather_by_padding(
    ctx: VJPContext, node: Node, dy: Value, data: Value, indices: Value, axis: int, rank: int
) -> Value | None:
    """The cotangent of a Gather of one constant index, or of a constant run of consecutive
    indices, along a static axis: zero padding around dy (what Split-like Gathers, e.g. of
    q, k and v from one tensor, need), far cheaper than a scatter. None: not such a Gather."""
    picked = None if indices.constant is None else indices.constant.numpy()
    dim = (ctx.shape_of(data) or [None] * rank)[axis]
    if picked is None or not isinstance(dim, int) or picked.ndim > 1 or picked.size == 0:
        return None
    flat = [int(i) % dim for i in picked.reshape(-1)]
    if flat != list(range(flat[0], flat[0] + len(flat))):
        return None
    if picked.ndim == 0:
        dy = ctx.unsqueeze(dy, [axis])
    begin, end = [0] * rank, [0] * rank
    begin[axis], end[axis] = flat[0], dim - flat[0] - len(flat)
    return ctx.pad(dy, begin, end, type=ctx.like(dy, data))
