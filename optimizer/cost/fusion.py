"""Cost of a graph as onnxruntime will run it: ops it fuses into their producer are free.

onnxruntime rewrites a graph before running it (ORT_ENABLE_ALL): an activation after a Conv or
Gemm runs inside that kernel, an Add of a per-channel constant after a Conv becomes its bias, a
residual Add (and the activation after it) after a Conv runs inside the NCHWc convolution, a
bias Add after a MatMul turns it into a Gemm. A per-op cost model that charges those ops a
kernel each misprices rewrites that move them: moving a Relu from after two Convs to after
their Concat saves one kernel on paper but costs the two fusions in practice (graphopt's first
benchmark run measured exactly that on SqueezeNet). :class:`OrtFusionCost` wraps any
node-additive model and charges a node onnxruntime will fuse into the node that produces its
first input only :data:`FUSED_FRACTION` of its price: nearly free, so moving it is priced
right, but still worth removing outright (folding a BatchNormalization into a Conv's weights
spares onnxruntime the work, and every other runtime too).

It is an approximation: onnxruntime fuses only when the producer's output has no other reader,
which a per-node cost cannot see; the measured guard (``optimizer.api``) has the last word.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from optimizer.cost.additive import computed_from_constants
from optimizer.cost.analytic import value_bytes
from optimizer.cost.layout import (
    BLOCKED_POOL_FACTOR,
    POOLS,
    UNBLOCKED_DEPTHWISE_FACTOR,
    UNBLOCKED_POOL_FACTOR,
    blocked,
    reordered_inputs,
    unblocked_depthwise,
)
from optimizer.ir import Graph, Node, Value
from optimizer.rewrite.match import context

__all__ = [
    "FUSED_FRACTION",
    "FUSED_INTO",
    "OrtFusionCost",
    "fused_into_producer",
]

#: Share of its own price a fused node is charged.
FUSED_FRACTION = 0.01
#: A layout reorder costs this many plain copies of its tensor: its kernel is a blocked
#: transpose, not a streaming copy.
REORDER_FACTOR = 2.0

_ACTIVATIONS = frozenset(
    {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish"}
)

#: op -> producer ops onnxruntime (CPU, ORT_ENABLE_ALL) fuses it into.
FUSED_INTO: dict[str, frozenset[str]] = {
    **{act: frozenset({"Conv", "Gemm", "FusedConv"}) for act in _ACTIVATIONS},
    # Conv + per-channel bias (ConvAddFusion), Conv + residual (NCHWc "Sum" fusion);
    # MatMul + bias becomes a Gemm (MatMulAddFusion).
    "Add": frozenset({"Conv", "MatMul"}),
    # BatchNormalization after a Conv folds into its weights (ConvBNFusion).
    "BatchNormalization": frozenset({"Conv"}),
    # Gelu after a bias Add becomes BiasGelu.
    "Gelu": frozenset({"Add"}),
}


def fused_into_producer(node: Node) -> bool:
    """Whether onnxruntime will fuse ``node`` into the node producing its (first) input.

    An Add is looked at from either operand (it commutes) and only counts as fused where
    onnxruntime's fusion takes it: a Gemm-shaped bias after a MatMul (MatMulAddFusion), a
    per-channel constant or a same-shape residual after a Conv.
    """
    producers = FUSED_INTO.get(node.op)
    if producers is None or node.domain not in ("", "ai.onnx") or not node.inputs:
        return False
    if node.op == "Add":
        if len(node.inputs) != 2 or any(v is None for v in node.inputs):
            return False
        a, b = node.inputs
        return _add_fuses(a, b) or _add_fuses(b, a)
    first = node.inputs[0]
    if first is None or first.node.is_source:
        return False
    producer = first.node
    return producer.op in producers and producer.domain in ("", "ai.onnx")


def _shape(value) -> tuple | None:
    shape = value.type.shape
    return None if shape is None else tuple(shape)


def _add_fuses(produced, other) -> bool:
    """Whether ``Add(produced, other)`` folds into the node producing ``produced``."""
    producer = produced.node
    if producer.is_source or producer.domain not in ("", "ai.onnx"):
        return False
    out, addend = _shape(produced), _shape(other)
    if out is None or addend is None:
        return False
    if producer.op == "MatMul":
        return _gemm_bias(producer, addend)
    if producer.op == "Conv":
        if addend == out:  # residual: NCHWc convolutions take a same-shape Sum input
            return True
        # a constant per output channel becomes the Conv's bias (ConvAddFusion)
        return (
            computed_from_constants(other)
            and len(addend) == len(out)
            and all(d == 1 for i, d in enumerate(addend) if i != 1)
            and addend[1] in (1, out[1])
        )
    return False


def _gemm_bias(matmul: Node, bias: tuple) -> bool:
    """onnxruntime's MatMulAddFusion test: a rank-2 weight of known size and a bias Gemm can
    broadcast unidirectionally ((N), or for a rank-2 left side (1, N), (M, 1), (M, N))."""
    if len(matmul.inputs) != 2 or any(v is None for v in matmul.inputs):
        return False
    left, weight = (_shape(v) for v in matmul.inputs)
    if left is None or weight is None or len(weight) != 2 or not isinstance(weight[1], int):
        return False
    n = weight[1]
    if len(bias) == 1:
        return bias[0] == n
    if len(left) != 2 or len(bias) != 2:
        return False
    return (bias[0] == 1 and bias[1] == n) or (bias[0] == left[0] and bias[1] in (1, n))


@dataclass(frozen=True)
class OrtFusionCost:
    """``base`` with the nodes onnxruntime fuses into their producer nearly free.

    With ``cpu_layout`` (an estimating ``base`` pricing for onnxruntime's CPU provider, see
    :mod:`optimizer.cost.layout`), a depthwise Conv that the CPU layout pass leaves out of its
    blocked kernels is charged :data:`optimizer.cost.layout.UNBLOCKED_DEPTHWISE_FACTOR` times
    its price, a pool :data:`~optimizer.cost.layout.BLOCKED_POOL_FACTOR` or
    :data:`~optimizer.cost.layout.UNBLOCKED_POOL_FACTOR` times its price, and a node pays one
    copy kernel per input reordered between layouts (a launch plus reading and writing the
    tensor, at ``base``'s rates); a measuring base sees the real kernels and leaves all off.
    """

    base: object
    cpu_layout: bool = False
    _memo: weakref.WeakKeyDictionary = field(
        default_factory=weakref.WeakKeyDictionary, compare=False, repr=False
    )

    def node_cost(self, node: Node) -> float:
        cost = self._memo.get(node)
        if cost is None:
            cost = self.base.node_cost(node)
            if fused_into_producer(node):
                cost *= FUSED_FRACTION
            if self.cpu_layout:
                if unblocked_depthwise(node):
                    cost *= UNBLOCKED_DEPTHWISE_FACTOR
                elif node.op in POOLS:
                    cost *= BLOCKED_POOL_FACTOR if blocked(node) else UNBLOCKED_POOL_FACTOR
                cost += sum(self._copy_cost(v) for v in reordered_inputs(node))
            self._memo[node] = cost
        return cost

    def _copy_cost(self, value) -> float:
        """A layout copy of ``value`` at ``base``'s rates (a kernel launch, the bytes read and
        written once each); 0 for a base without those rates."""
        launch = getattr(self.base, "launch_overhead", None)
        per_byte = getattr(self.base, "bytes_weight", None)
        if launch is None or per_byte is None:
            return 0.0
        read = getattr(self.base, "read_weight", None)
        read = per_byte if read is None else read
        return REORDER_FACTOR * (launch + (per_byte + read) * value_bytes(value))

    def free_nodes(self, order: Iterable[Node], free: set[Node] | None = None) -> set[Node]:
        return self.base.free_nodes(order, free)

    def total(self, order: Sequence[Node], outputs: Iterable[Value] = ()) -> float:
        free = self.free_nodes(order)
        seconds = sum(self.node_cost(n) for n in order if n not in free)
        # A measuring base prices the fusions across nodes that it timed as whole kernels
        # (SkipLayerNormalization: slower than its parts) on top of the per-node prices.
        correction = getattr(self.base, "group_correction", None)
        if correction is not None and getattr(self.base, "fusion", False):
            seconds += correction(order, free, outputs)
        return seconds

    def __call__(self, graph: Graph) -> float:
        bind = getattr(self.base, "bind", None)
        if bind is not None:
            bind(graph)  # models that build nodes (measured) need the graph's opsets
        return self.total(context(graph).order, graph.outputs)
