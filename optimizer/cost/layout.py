"""Which nodes onnxruntime's CPU layout pass runs in its blocked (NCHWc) kernels, and what the
layout changes between them cost.

At ORT_ENABLE_ALL on the CPU, onnxruntime rewrites chains of convolutions and pools into its
NCHWc layout (channels in blocks of 16 on AVX-512, one vectorized kernel per block) and
inserts a ``ReorderInput``/``ReorderOutput`` copy wherever a blocked node meets one that is
not. What it takes, probed on onnxruntime 1.32 (every channel count from 2 to 49):

- a Conv with a constant 4-D weight: depthwise when its channel count is a multiple of 4;
  ungrouped when it reads fewer than 16 channels or a multiple of 4 (onnxruntime pads the
  output channels itself); other grouped convs not;
- MaxPool / AveragePool (either ``count_include_pad``) and their global forms, and Concat on
  the channel axis, only when every channel count is a multiple of 16;
- BatchNormalization (turned into a conv), elementwise activations and same-shape Add / Mul /
  Sum when their inputs are blocked; everything else (Pad, Slice, Split, Div, Reshape, ...)
  runs in the plain layout.

A FLOP-counting model sees none of it. Priced for the CPU, :class:`optimizer.cost.fusion.
OrtFusionCost` charges a depthwise conv left out of the blocked kernels
:data:`UNBLOCKED_DEPTHWISE_FACTOR` times its price (its plain kernel, im2col and one small
product per group, ran NASNet-A's 11- and 22-channel cells at about a tenth of the blocked
kernel's FLOP rate: 19% of the model's time), and every node one reorder per input whose
producer sits on the other side of the layout boundary (:func:`reordered_inputs`). That is
what makes the channel-padding rules (``rules/conv.rules``) pay off where they should. The
measured cost model times real kernels and needs no correction. Approximations: a reorder
feeding several readers is charged to each, and a graph input or output on a blocked node is
not charged.
"""

from __future__ import annotations

import weakref

from optimizer.cost.additive import computed_from_constants
from optimizer.cost.analytic import OTHER_FLOP_WEIGHT
from optimizer.ir import Node, TensorType, Value

__all__ = [
    "BLOCKED_POOL_FACTOR",
    "BLOCK_CHANNELS",
    "POOLS",
    "CONV_CHANNEL_MULTIPLE",
    "UNBLOCKED_DEPTHWISE_FACTOR",
    "UNBLOCKED_POOL_FACTOR",
    "blocked",
    "reordered_inputs",
    "unblocked_depthwise",
]

#: Channel multiple pools and Concat need to run blocked (the NCHWc block on AVX-512).
BLOCK_CHANNELS = 16
#: Channel multiple a depthwise conv (or an ungrouped one reading >= 16 channels) needs.
CONV_CHANNEL_MULTIPLE = 4
#: Price multiplier of a depthwise convolution left in the NCHW kernel: the ratio between
#: elementwise and dense FLOPs, about what the development machine measured for this kernel.
UNBLOCKED_DEPTHWISE_FACTOR = OTHER_FLOP_WEIGHT
#: Price multiplier of a blocked pool: it runs at about the dense kernels' rate per FLOP, where
#: the analytic model prices pooling FLOPs at the elementwise rate.
BLOCKED_POOL_FACTOR = 1.0 / OTHER_FLOP_WEIGHT
#: Price multiplier of a pool left in the plain NCHW kernel: onnxruntime's plain AveragePool
#: took about 10 ns per output of a 3x3 window on NASNet-A's 11- to 264-channel cells (its
#: profiler, 2 threads), so its price was about a tenth of its share of the model's time.
UNBLOCKED_POOL_FACTOR = OTHER_FLOP_WEIGHT

#: Pooling ops the layout pass runs blocked (in whole blocks of channels).
POOLS = frozenset({"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"})
_FOLLOWERS = frozenset(
    {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu",
     "Softplus", "Neg", "Abs", "Exp", "Sqrt", "BatchNormalization", "Identity"}
)  # fmt: skip
_BINARY = frozenset({"Add", "Mul", "Sum", "Max", "Min"})

_BLOCKED: weakref.WeakKeyDictionary[Node, bool] = weakref.WeakKeyDictionary()


def _shape4(value: Value | None) -> tuple | None:
    if value is None or not isinstance(value.type, TensorType) or value.type.shape is None:
        return None
    shape = tuple(value.type.shape)
    return shape if len(shape) == 4 else None


def _channels(value: Value | None) -> int | None:
    shape = _shape4(value)
    return shape[1] if shape is not None and isinstance(shape[1], int) else None


def _conv_weight(node: Node) -> tuple[tuple[int, ...], int] | None:
    """A standard Conv's static 4-D weight shape and group count, else None. (A weight a
    rewrite just built, Pad(w) before folding, has its shape already.)"""
    if node.op != "Conv" or not _standard(node) or len(node.inputs) < 2:
        return None
    shape = _shape4(node.inputs[1])
    group = node.attr("group", 1)
    if shape is None or not all(isinstance(d, int) for d in shape) or not isinstance(group, int):
        return None
    return shape, group


def _output4(node: Node) -> bool:
    """Whether ``node`` is a standard node with a 4-D first output."""
    return _standard(node) and bool(node.outputs) and _shape4(node.outputs[0]) is not None


def _standard(node: Node) -> bool:
    return not node.is_source and node.domain in ("", "ai.onnx")


def unblocked_depthwise(node: Node) -> bool:
    """Whether ``node`` is a 2-D depthwise Conv that onnxruntime's CPU layout pass leaves in
    the plain NCHW kernel (its channel count is not a multiple of 4)."""
    conv = _conv_weight(node)
    if conv is None:
        return False
    (out, per_group, *_), group = conv
    return group > 1 and out == group and per_group == 1 and group % CONV_CHANNEL_MULTIPLE != 0


def _data_inputs(node: Node) -> list[Value]:
    """The 4-D inputs a layout change would be inserted on (a Conv's weights and biases, and
    other constants, are reordered once when the session is built)."""
    values = node.inputs[:1] if node.op == "Conv" else node.inputs
    return [
        v for v in values
        if v is not None and not computed_from_constants(v) and _shape4(v) is not None
    ]  # fmt: skip


def _conv_blocked(node: Node) -> bool:
    conv = _conv_weight(node)
    if conv is None:
        return False
    (out, per_group, *_), group = conv
    if group == 1:
        return per_group < BLOCK_CHANNELS or per_group % CONV_CHANNEL_MULTIPLE == 0
    return per_group == 1 and out == group and group % CONV_CHANNEL_MULTIPLE == 0


def _compute_blocked(node: Node) -> bool:
    if not _output4(node):
        return False
    if node.op == "Conv":
        return _conv_blocked(node)
    inputs = _data_inputs(node)
    if node.op in POOLS:
        channels = _channels(node.inputs[0])
        return channels is not None and channels % BLOCK_CHANNELS == 0
    if node.op == "Concat":
        axis = node.attr("axis", 0)
        channels = [_channels(v) for v in node.inputs]
        return (
            axis in (1, -3)
            and all(c is not None and c % BLOCK_CHANNELS == 0 for c in channels)
            and all(blocked(v.node) for v in inputs)
        )
    if node.op in _FOLLOWERS or node.op in _BINARY:
        shape = _shape4(node.outputs[0])
        return (
            bool(inputs)
            and len(inputs) == len([v for v in node.inputs if v is not None])
            and all(_shape4(v) == shape for v in inputs)
            and all(blocked(v.node) for v in inputs)
        )
    return False


def blocked(node: Node) -> bool:
    """Whether onnxruntime's CPU layout pass runs ``node`` on blocked (NCHWc) tensors."""
    if node.is_source:
        return False
    found = _BLOCKED.get(node)
    if found is None:
        found = _BLOCKED[node] = _compute_blocked(node)
    return found


def reordered_inputs(node: Node) -> list[Value]:
    """The inputs of ``node`` onnxruntime reorders between layouts before running it: those
    whose producer's layout differs from the node's own (a graph input counts as plain)."""
    if not _output4(node):
        return []
    mine = blocked(node)
    return [v for v in _data_inputs(node) if blocked(v.node) != mine]
