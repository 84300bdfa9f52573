"""VJP rules of convolution, pooling, normalization and Gelu.

Convolution and average pooling are linear in their input, so their input cotangent is a
``ConvTranspose`` of the output cotangent with the same kernel, strides, dilations and groups;
its ``pads`` crop the padding again and ``output_padding`` restores input elements that no
window read. That needs static spatial sizes (the usual case: models fix their image size).
Max pooling scatters the cotangent to the argmax positions that ``MaxPool``'s own ``Indices``
output reports (``ScatterElements`` with ``reduction="add"``, opset 16 and later).
"""

from __future__ import annotations

import math

import numpy as np

from optimizer.explain.autodiff import vjp_rule
from optimizer.explain.vjp_context import VJPContext
from optimizer.ir import Node, TensorType, Value

Grads = list["Value | None"]


# ------------------------------------------------------------------- window geometry


class _Window:
    """The geometry of a Conv/Pool node: kernel, strides, dilations and explicit pads."""

    def __init__(self, ctx: VJPContext, node: Node, kernel: list[int]) -> None:
        x, y = node.inputs[0], node.outputs[0]
        xs, ys = ctx.shape_of(x), ctx.shape_of(y)  # type: ignore[arg-type]
        if xs is None or ys is None:
            raise ctx.fail(node, "input or output has unknown rank")
        self.spatial = len(xs) - 2
        self.inp = [d for d in xs[2:]]
        self.out = [d for d in ys[2:]]
        if not all(isinstance(d, int) for d in self.inp + self.out):
            raise ctx.fail(
                node, "spatial sizes must be static (fix the input shape, e.g. x:1,3,224,224)"
            )
        s = self.spatial
        self.kernel = list(kernel)
        self.strides = list(node.attr("strides") or [1] * s)
        self.dilations = list(node.attr("dilations") or [1] * s)
        auto_pad = (node.attr("auto_pad") or b"NOTSET").decode()
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for i in range(s):
                eff = (self.kernel[i] - 1) * self.dilations[i] + 1
                total = max(0, (self.out[i] - 1) * self.strides[i] + eff - self.inp[i])
                small, large = total // 2, total - total // 2
                begin.append(small if auto_pad == "SAME_UPPER" else large)
                end.append(large if auto_pad == "SAME_UPPER" else small)
            self.pads = begin + end
        elif auto_pad == "VALID":
            self.pads = [0] * (2 * s)
        else:
            self.pads = list(node.attr("pads") or [0] * (2 * s))

    def effective(self, i: int) -> int:
        """Extent of the dilated kernel along spatial axis ``i``."""
        return (self.kernel[i] - 1) * self.dilations[i] + 1

    def transpose_attrs(self) -> dict:
        """ConvTranspose attributes that map an output cotangent back onto the input."""
        s = self.spatial
        begin = self.pads[:s]
        end, extra = [], []
        for i in range(s):
            full = self.strides[i] * (self.out[i] - 1) + self.effective(i)
            # full + output_padding - begin - end == input size
            crop = full - begin[i] - self.inp[i]
            end.append(max(crop, 0))
            extra.append(max(-crop, 0))
        return {
            "strides": self.strides,
            "dilations": self.dilations,
            "pads": begin + end,
            "output_padding": extra,
        }


# ------------------------------------------------------------------- convolution


@vjp_rule("Conv")
def _conv(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    dy = g[0]
    wshape = ctx.static_shape(w)  # type: ignore[arg-type]
    if wshape is None:
        raise ctx.fail(node, "the weight shape must be static")
    kernel = list(node.attr("kernel_shape") or wshape[2:])
    win = _Window(ctx, node, kernel)
    groups = int(node.attr("group", 1))
    out: Grads = [None] * len(node.inputs)
    if need[0]:
        attrs = {**win.transpose_attrs(), "group": groups}
        out[0] = ctx.emit("ConvTranspose", [dy, w], attrs, type=ctx.like(dy, x))  # type: ignore[arg-type]
    if need[1]:
        out[1] = _conv_weight_grad(ctx, node, x, dy, wshape, win, groups)  # type: ignore[arg-type]
    if bias is not None and need[2]:
        axes = [0] + list(range(2, 2 + win.spatial))
        out[2] = ctx.reduce_sum(dy, axes, keepdims=False)  # type: ignore[arg-type]
    return out


def _conv_weight_grad(
    ctx: VJPContext, node: Node, x: Value, dy: Value, wshape, win: _Window, groups: int
) -> Value:
    """dW[o, c, k] = sum_n sum_p dy[n, o, p] * xpad[n, c, p*stride + k*dilation]: a Conv of
    the batch-transposed input with the batch-transposed cotangent as kernel (strides and
    dilations trade places), cropped to the kernel size; one such Conv per group."""
    s = win.spatial
    swap = [1, 0] + list(range(2, 2 + s))
    cin_g, cout_g = wshape[1], wshape[0] // groups
    parts = []
    for k in range(groups):
        xg, gg = x, dy
        if groups > 1:
            xg = _slice(ctx, x, 1, k * cin_g, (k + 1) * cin_g)
            gg = _slice(ctx, dy, 1, k * cout_g, (k + 1) * cout_g)
        r = ctx.emit(
            "Conv",
            [ctx.transpose(xg, swap), ctx.transpose(gg, swap)],
            {"strides": win.dilations, "dilations": win.strides, "pads": win.pads},
        )
        r = ctx.emit(
            "Slice",
            [r, ctx.ints([0] * s), ctx.ints(win.kernel), ctx.ints(list(range(2, 2 + s)))],
        )
        parts.append(ctx.transpose(r, swap))
    dw = parts[0] if groups == 1 else ctx.emit("Concat", parts, {"axis": 0})
    return ctx.emit("Identity", [dw], type=TensorType(dy.type.dtype, tuple(wshape)))


def _slice(ctx: VJPContext, x: Value, axis: int, start: int, end: int) -> Value:
    return ctx.emit("Slice", [x, ctx.ints([start]), ctx.ints([end]), ctx.ints([axis])])


# ------------------------------------------------------------------- pooling


@vjp_rule("AveragePool")
def _average_pool(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x, dy = node.inputs[0], g[0]
    win = _Window(ctx, node, list(node.attr("kernel_shape")))
    include_pad = bool(node.attr("count_include_pad", 0))
    # Each output averages the window elements inside the input (or inside the padded input
    # with count_include_pad): divide the cotangent by that count, then spread it back.
    counts = np.ones([1, 1], dtype=np.float64)
    for i in range(win.spatial):
        lo, hi = (
            (-win.pads[i], win.inp[i] + win.pads[win.spatial + i])
            if include_pad
            else (
                0,
                win.inp[i],
            )
        )
        axis = []
        for p in range(win.out[i]):
            start = p * win.strides[i] - win.pads[i]
            taps = start + win.dilations[i] * np.arange(win.kernel[i])
            axis.append(int(((taps >= lo) & (taps < hi)).sum()))
        counts = np.multiply.outer(counts, np.array(axis, dtype=np.float64))
    counts = counts.reshape([1, 1] + win.out)
    scale = ctx.const((1.0 / np.maximum(counts, 1)).astype(dy.type.dtype.to_numpy()))  # type: ignore[union-attr]
    scaled = ctx.mul(dy, scale)  # type: ignore[arg-type]
    # Fold channels into the batch so one all-ones 1x1-channel kernel serves every channel.
    flat = ctx.reshape(scaled, ctx.ints([-1, 1] + win.out))
    ones = np.ones([1, 1] + win.kernel, dtype=dy.type.dtype.to_numpy())  # type: ignore[union-attr]
    spread = ctx.emit("ConvTranspose", [flat, ctx.const(ones)], win.transpose_attrs())
    return [ctx.reshape_like(spread, x)]  # type: ignore[arg-type]


@vjp_rule("MaxPool")
def _max_pool(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    if len(node.outputs) > 1 and g[1] is not None:
        raise ctx.fail(node, "the Indices output has no gradient")
    if ctx.opset < 16:
        raise ctx.fail(
            node, "needs opset 16 or later (ScatterElements with reduction); convert the model"
        )
    if node.attr("storage_order", 0):
        raise ctx.fail(node, "storage_order=1 is not supported")
    x, dy = node.inputs[0], g[0]
    if len(node.outputs) > 1:
        indices = node.outputs[1]
    else:
        twin = ctx.node_outputs("MaxPool", [x], dict(node.attrs), outputs=2)
        indices = twin[1]
    flat = ctx.ints([-1])
    zeros = ctx.reshape(ctx.zeros_like(x), flat)  # type: ignore[arg-type]
    scattered = ctx.emit(
        "ScatterElements",
        [zeros, ctx.reshape(indices, flat), ctx.reshape(dy, flat)],  # type: ignore[arg-type]
        {"axis": 0, "reduction": "add"},
    )
    return [ctx.reshape_like(scattered, x)]  # type: ignore[arg-type]


@vjp_rule("GlobalAveragePool")
def _global_average_pool(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x, dy = node.inputs[0], g[0]
    shape = ctx.static_shape(x)  # type: ignore[arg-type]
    if shape is not None:
        count = ctx.scalar(float(np.prod(shape[2:])), dy)  # type: ignore[arg-type]
    else:
        ratio = ctx.div(ctx.emit("Size", [x]), ctx.emit("Size", [node.outputs[0]]))
        count = ctx.cast_like(ratio, dy)  # type: ignore[arg-type]
    return [ctx.div(ctx.expand_like(dy, x), count)]  # type: ignore[arg-type]


@vjp_rule("GlobalMaxPool")
def _global_max_pool(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x, y, dy = node.inputs[0], node.outputs[0], g[0]
    rank = ctx.rank(x, node)  # type: ignore[arg-type]
    hit = ctx.cast_like(ctx.emit("Equal", [x, y]), x)  # type: ignore[arg-type]
    ties = ctx.reduce_sum(hit, list(range(2, rank)), keepdims=True)
    return [ctx.mul(ctx.expand_like(dy, x), ctx.div(hit, ties))]  # type: ignore[arg-type]


# ------------------------------------------------------------------- normalization


@vjp_rule("BatchNormalization")
def _batch_norm(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    if node.attr("training_mode", 0) or len(node.outputs) > 1 or ctx.opset < 9:
        raise ctx.fail(node, "only inference-mode BatchNormalization (opset 9+) is supported")
    x, scale, bias, mean, var = node.inputs
    dy = g[0]
    rank = ctx.rank(x, node)  # type: ignore[arg-type]
    eps = float(node.attr("epsilon", 1e-5))
    per_channel = list(range(1, rank - 1))

    def channels(v: Value) -> Value:  # [C] -> [C, 1, ...] to broadcast against [N, C, ...]
        return ctx.unsqueeze(v, per_channel)

    inv = ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.add(var, ctx.scalar(eps, var))])])  # type: ignore[arg-type]
    out: Grads = [None] * 5
    reduce = [0] + list(range(2, rank))
    if need[0]:
        out[0] = ctx.mul(dy, channels(ctx.mul(scale, inv)))  # type: ignore[arg-type]
    if any(need[1:]):
        centred = ctx.sub(x, channels(mean))  # type: ignore[arg-type]
        sum_dy = ctx.reduce_sum(dy, reduce, keepdims=False)  # type: ignore[arg-type]
        sum_dy_c = ctx.reduce_sum(ctx.mul(dy, centred), reduce, keepdims=False)  # type: ignore[arg-type]
        if need[1]:
            out[1] = ctx.mul(sum_dy_c, inv)
        if need[2]:
            out[2] = sum_dy
        if need[3]:
            out[3] = ctx.neg(ctx.mul(sum_dy, ctx.mul(scale, inv)))  # type: ignore[arg-type]
        if need[4]:
            cube = ctx.mul(inv, ctx.mul(inv, inv))
            half = ctx.scalar(-0.5, var)  # type: ignore[arg-type]
            out[4] = ctx.mul(ctx.mul(sum_dy_c, scale), ctx.mul(cube, half))  # type: ignore[arg-type]
    return out


@vjp_rule("LayerNormalization")
def _layer_norm(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    if any(d is not None for d in g[1:]):
        raise ctx.fail(node, "the Mean/InvStdDev outputs have no gradient rule")
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    dy = g[0]
    rank = ctx.rank(x, node)  # type: ignore[arg-type]
    axes = list(range(int(node.attr("axis", -1)) % rank, rank))
    eps = float(node.attr("epsilon", 1e-5))
    mean = ctx.reduce_mean(x, axes)  # type: ignore[arg-type]
    centred = ctx.sub(x, mean)  # type: ignore[arg-type]
    var = ctx.reduce_mean(ctx.mul(centred, centred), axes)
    inv = ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.add(var, ctx.scalar(eps, var))])])
    xhat = ctx.mul(centred, inv)
    out: Grads = [None] * len(node.inputs)
    if need[0]:
        gh = ctx.mul(dy, scale)  # type: ignore[arg-type]
        inner = ctx.add(
            ctx.reduce_mean(gh, axes), ctx.mul(xhat, ctx.reduce_mean(ctx.mul(gh, xhat), axes))
        )
        out[0] = ctx.mul(inv, ctx.sub(gh, inner))
    if need[1]:
        out[1] = ctx.unbroadcast(ctx.mul(dy, xhat), scale)  # type: ignore[arg-type]
    if bias is not None and need[2]:
        out[2] = ctx.unbroadcast(dy, bias)  # type: ignore[arg-type]
    return out


# ------------------------------------------------------------------- Gelu


@vjp_rule("Gelu")
def _gelu(ctx: VJPContext, node: Node, g: Grads, need: list[bool]) -> Grads:
    x, dy = node.inputs[0], g[0]
    approximate = (node.attr("approximate") or b"none").decode()

    def c(v: float) -> Value:
        return ctx.scalar(v, x)  # type: ignore[arg-type]

    if approximate == "tanh":
        # y = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
        k = math.sqrt(2.0 / math.pi)
        x2 = ctx.mul(x, x)  # type: ignore[arg-type]
        u = ctx.mul(c(k), ctx.add(x, ctx.mul(c(0.044715), ctx.mul(x2, x))))  # type: ignore[arg-type]
        t = ctx.emit("Tanh", [u])
        du = ctx.mul(c(k), ctx.add(c(1.0), ctx.mul(c(3 * 0.044715), x2)))
        left = ctx.mul(c(0.5), ctx.add(c(1.0), t))
        right = ctx.mul(ctx.mul(c(0.5), x), ctx.mul(ctx.sub(c(1.0), ctx.mul(t, t)), du))  # type: ignore[arg-type]
        slope = ctx.add(left, right)
    else:
        # y = x Phi(x): dy/dx = Phi(x) + x phi(x)
        cdf = ctx.mul(c(0.5), ctx.add(c(1.0), ctx.emit("Erf", [ctx.mul(x, c(1 / math.sqrt(2)))])))  # type: ignore[arg-type]
        pdf = ctx.mul(
            c(1 / math.sqrt(2 * math.pi)),
            ctx.emit("Exp", [ctx.mul(c(-0.5), ctx.mul(x, x))]),  # type: ignore[arg-type]
        )
        slope = ctx.add(cdf, ctx.mul(x, pdf))  # type: ignore[arg-type]
    return [ctx.mul(dy, slope)]  # type: ignore[arg-type]
