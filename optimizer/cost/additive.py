"""What every node-additive cost model shares: free nodes, totals, and pricing a graph.

A subclass supplies ``node_cost(node)``; the cost of a graph is the sum of it over the nodes
that constant folding would not remove (:meth:`NodeAdditive.free_nodes`). That is what lets a
search price a rewrite from the nodes it adds and removes alone.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence

from optimizer.ir import Graph, Node, TensorType, Value
from optimizer.ir.ops import CONTROL_FLOW_OPS, NONDETERMINISTIC_OPS
from optimizer.ir.types import DType
from optimizer.rewrite.match import context

__all__ = ["NodeAdditive", "computed_from_constants", "foldable"]


def foldable(node: Node) -> bool:
    """Whether constant folding would evaluate ``node`` once its inputs are constants."""
    return (
        not node.is_source
        and node.domain == ""
        and node.unique is None
        and not node.captures
        and bool(node.inputs)
        and node.op not in NONDETERMINISTIC_OPS
        and node.op not in CONTROL_FLOW_OPS
        and all(
            isinstance(v.type, TensorType) and v.type.dtype not in (DType.STRING, DType.UNDEFINED)
            for v in node.outputs
        )
    )


#: Node -> whether its outputs are computable from constants alone (nodes are immutable).
_FROM_CONSTANTS: weakref.WeakKeyDictionary[Node, bool] = weakref.WeakKeyDictionary()


def computed_from_constants(value: Value) -> bool:
    """Whether ``value`` is a constant or computable from constants alone (what onnxruntime's
    constant folding, and graphopt's, evaluate before the model runs)."""
    if value.is_constant:
        return True
    todo = [value.node]
    while todo:  # depth first, without recursion: constant chains can be long
        node = todo[-1]
        if node in _FROM_CONSTANTS:
            todo.pop()
            continue
        if node.is_source or not foldable(node):  # a graph input, or run at run time
            _FROM_CONSTANTS[node] = False
            todo.pop()
            continue
        pending = [
            v.node for v in node.inputs
            if v is not None and not v.is_constant and v.node not in _FROM_CONSTANTS
        ]  # fmt: skip
        if pending:
            todo.extend(pending)
            continue
        _FROM_CONSTANTS[node] = all(
            v is None or v.is_constant or _FROM_CONSTANTS[v.node] for v in node.inputs
        )
        todo.pop()
    return _FROM_CONSTANTS[value.node]


class NodeAdditive:
    """Base of the cost models: ``total`` and ``__call__`` from a subclass's ``node_cost``.

    ``units`` names what the numbers measure ("seconds", or "flop-equivalents" for the
    uncalibrated analytic model).
    """

    units: str = "flop-equivalents"

    def node_cost(self, node: Node) -> float:  # pragma: no cover - abstract
        """Cost of running ``node`` once (it is not free)."""
        raise NotImplementedError

    def free_nodes(self, order: Iterable[Node], free: set[Node] | None = None) -> set[Node]:
        """The nodes of ``order`` (topological) computable from constants alone."""
        free = set() if free is None else free
        for node in order:
            if foldable(node) and all(
                v is None or v.is_constant or v.node in free for v in node.inputs
            ):
                free.add(node)
        return free

    def total(self, order: Sequence[Node]) -> float:
        """Cost of the nodes ``order`` (a graph's nodes in topological order)."""
        free = self.free_nodes(order)
        return sum(self.node_cost(n) for n in order if n not in free)

    def __call__(self, graph: Graph) -> float:
        """Cost of ``graph``."""
        return self.total(context(graph).order)
