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

from optimizer.ir import Graph, Node
from optimizer.rewrite.match import context

__all__ = ["FUSED_FRACTION", "FUSED_INTO", "OrtFusionCost", "fused_into_producer"]

#: Share of its own price a fused node is charged.
FUSED_FRACTION = 0.01

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
    """Whether onnxruntime will fuse ``node`` into the node producing its first input."""
    producers = FUSED_INTO.get(node.op)
    if producers is None or node.domain not in ("", "ai.onnx") or not node.inputs:
        return False
    first = node.inputs[0]
    if first is None or first.node.is_source:
        return False
    producer = first.node
    if node.op == "Add" and producer.op == "Add":
        return False
    return producer.op in producers and producer.domain in ("", "ai.onnx")


@dataclass(frozen=True)
class OrtFusionCost:
    """``base`` with the nodes onnxruntime fuses into their producer nearly free."""

    base: object
    _memo: weakref.WeakKeyDictionary = field(
        default_factory=weakref.WeakKeyDictionary, compare=False, repr=False
    )

    def node_cost(self, node: Node) -> float:
        cost = self._memo.get(node)
        if cost is None:
            cost = self.base.node_cost(node)
            if fused_into_producer(node):
                cost *= FUSED_FRACTION
            self._memo[node] = cost
        return cost

    def free_nodes(self, order: Iterable[Node], free: set[Node] | None = None) -> set[Node]:
        return self.base.free_nodes(order, free)

    def total(self, order: Sequence[Node]) -> float:
        free = self.free_nodes(order)
        return sum(self.node_cost(n) for n in order if n not in free)

    def __call__(self, graph: Graph) -> float:
        bind = getattr(self.base, "bind", None)
        if bind is not None:
            bind(graph)  # models that build nodes (measured) need the graph's opsets
        return self.total(context(graph).order)

