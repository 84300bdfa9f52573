"""Semantics of the neural-network ops: convolution, pooling, normalisation, softmax."""

from __future__ import annotations

import itertools

import numpy as np

from optimizer.verify.arith import Unencodable
from optimizer.verify.semantics import attr, ew, obj, op, reduce_axes


def _spatial_pads(node, in_sizes, out_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis, resolving ``auto_pad``."""
    n = len(in_sizes)
    auto = attr(node, "auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for i in range(n):
            total = max(
                0,
                (out_sizes[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_sizes[i],
            )
            small = total // 2
            pads.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return pads
    if auto == "VALID":
        return [(0, 0)] * n
    flat = list(node.attr("pads") or [0] * (2 * n))
    return [(flat[i], flat[i + n]) for i in range(n)]


@op("Conv")
def _conv(node, ins, ar):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    n_sp = x.ndim - 2
    kernel = list(node.attr("kernel_shape") or w.shape[2:])
    strides = list(node.attr("strides") or [1] * n_sp)
    dil = list(node.attr("dilations") or [1] * n_sp)
    group = attr(node, "group", 1)
    out_shape = tuple(node.outputs[0].type.shape)
    pads = _spatial_pads(node, x.shape[2:], out_shape[2:], kernel, strides, dil)
    zero = ar.const(0.0)
    padded_shape = x.shape[:2] + tuple(
        d + lo + hi for d, (lo, hi) in zip(x.shape[2:], pads, strict=False)
    )
    xp = obj(zero, padded_shape)
    xp[
        (slice(None), slice(None))
        + tuple(slice(lo, lo + d) for d, (lo, _) in zip(x.shape[2:], pads, strict=False))
    ] = x
    m_total, cg = w.shape[0], w.shape[1]
    mg = m_total // group
    out = obj(zero, out_shape)
    for g in range(group):
        chans = slice(g * cg, (g + 1) * cg)
        outs = slice(g * mg, (g + 1) * mg)
        for offs in itertools.product(*(range(k) for k in kernel)):
            window = tuple(
                slice(o * d, o * d + s * (size - 1) + 1, s)
                for o, d, s, size in zip(offs, dil, strides, out_shape[2:], strict=False)
            )
            patch = xp[(slice(None), chans) + window]  # (N, Cg, *out)
            wk = w[(outs, slice(None)) + offs]  # (Mg, Cg)
            contrib = np.tensordot(wk, patch, axes=([1], [1]))  # (Mg, N, *out)
            out[:, outs] = out[:, outs] + np.moveaxis(obj(contrib), 0, 1)
    if b is not None:
        out = out + b.reshape((1, -1) + (1,) * n_sp)
    return [obj(out)]


def _pool(kind: str):
    def sem(node, ins, ar):
        x = ins[0]
        n_sp = x.ndim - 2
        kernel = list(node.attr("kernel_shape"))
        strides = list(node.attr("strides") or [1] * n_sp)
        dil = list(node.attr("dilations") or [1] * n_sp)
        out_shape = tuple(node.outputs[0].type.shape)
        pads = _spatial_pads(node, x.shape[2:], out_shape[2:], kernel, strides, dil)
        include_pad = bool(attr(node, "count_include_pad", 0))
        out = np.empty(out_shape, dtype=object)
        for pos in itertools.product(*(range(o) for o in out_shape[2:])):
            taps, padded_count = [], 0
            for offs in itertools.product(*(range(k) for k in kernel)):
                coord = [
                    p * s + o * d - lo
                    for p, s, o, d, (lo, _) in zip(pos, strides, offs, dil, pads, strict=False)
                ]
                inside_pad = all(
                    -lo <= c < size + hi
                    for c, size, (lo, hi) in zip(coord, x.shape[2:], pads, strict=False)
                )
                padded_count += inside_pad
                if all(0 <= c < size for c, size in zip(coord, x.shape[2:], strict=False)):
                    taps.append(tuple(coord))
            if not taps:
                raise Unencodable("a pooling window lies entirely in the padding")
            for nc in itertools.product(range(x.shape[0]), range(x.shape[1])):
                vals = [x[nc + t] for t in taps]
                if kind == "max":
                    acc = vals[0]
                    for v in vals[1:]:
                        acc = ar.max(acc, v)
                else:
                    acc = vals[0]
                    for v in vals[1:]:
                        acc = acc + v
                    acc = ar.div(acc, ar.const(padded_count if include_pad else len(taps)))
                out[nc + pos] = acc
        return [out] + ([] if len(node.outputs) == 1 else _no_indices())

    return sem


def _no_indices():
    raise Unencodable("MaxPool's index output")


op("MaxPool")(_pool("max"))
op("AveragePool")(_pool("avg"))


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node, ins, ar):
    x = ins[0]
    axes = list(range(2, x.ndim))
    if node.op == "GlobalMaxPool":
        return [reduce_axes(x, axes, True, ar.max)]
    total = reduce_axes(x, axes, True, lambda a, b: a + b)
    n = ar.const(int(np.prod(x.shape[2:])))
    return [ew(lambda s: ar.div(s, n), total)]


@op("BatchNormalization")
def _batchnorm(node, ins, ar):
    if attr(node, "training_mode", 0) or len(node.outputs) > 1:
        raise Unencodable("BatchNormalization in training mode")
    x, scale, bias, mean, var = ins[:5]
    eps = ar.const(np.float32(attr(node, "epsilon", 1e-5)))
    shape = (1, -1) + (1,) * (x.ndim - 2)

    def denom(v):
        # A variance is non-negative: granted on the match side, demanded on the rewrite side.
        ar.assume(ar.ge(v, 0), "BatchNormalization variance may be negative")
        return ar.sqrt(v + eps)

    std = ew(denom, var)
    factor = ew(ar.div, scale, std)
    y = ew(
        lambda xv, f, m, b: (xv - m) * f + b,
        x,
        factor.reshape(shape),
        mean.reshape(shape),
        bias.reshape(shape),
    )
    return [y]


def _normalize(x, axes, eps, ar):
    n = ar.const(int(np.prod([x.shape[a] for a in axes])))
    mean = ew(lambda s: ar.div(s, n), reduce_axes(x, axes, True, lambda a, b: a + b))
    centred = ew(lambda a, m: a - m, x, mean)
    var = ew(
        lambda s: ar.div(s, n),
        reduce_axes(ew(lambda c: c * c, centred), axes, True, lambda a, b: a + b),
    )
    std = ew(lambda v: ar.sqrt(v + eps), var)
    return ew(ar.div, centred, std)


@op("LayerNormalization")
def _layernorm(node, ins, ar):
    if len(node.outputs) > 1:
        raise Unencodable("LayerNormalization's mean/inv-std outputs")
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axis = attr(node, "axis", -1) % x.ndim
    eps = ar.const(np.float32(attr(node, "epsilon", 1e-5)))
    y = ew(lambda a, s: a * s, _normalize(x, list(range(axis, x.ndim)), eps, ar), scale)
    if bias is not None:
        y = ew(lambda a, b: a + b, y, bias)
    return [y]


@op("InstanceNormalization")
def _instancenorm(node, ins, ar):
    x, scale, bias = ins
    eps = ar.const(np.float32(attr(node, "epsilon", 1e-5)))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = _normalize(x, list(range(2, x.ndim)), eps, ar)
    return [ew(lambda a, s, b: a * s + b, y, scale.reshape(shape), bias.reshape(shape))]


@op("Softmax", "LogSoftmax")
def _softmax(node, ins, ar):
    x = ins[0]
    axis = attr(node, "axis", -1) % max(x.ndim, 1)
    e = ew(ar.exp, x)
    total = reduce_axes(e, [axis], True, lambda a, b: a + b)
    if node.op == "Softmax":
        return [ew(ar.div, e, total)]
    return [ew(lambda a, t: a - ar.func("log", t), x, total)]
