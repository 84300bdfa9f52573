"""Cost models: what a search minimises.

A cost model is node-additive (:class:`CostModel`): the cost of a graph is the sum of
``node_cost`` over its nodes that constant folding would not remove (``free_nodes``). That lets
a search price a rewrite from the nodes it adds and removes alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from optimizer.cost.analytic import LAUNCH_OVERHEAD, AnalyticCost, foldable
from optimizer.ir import Graph, Node

__all__ = ["LAUNCH_OVERHEAD", "AnalyticCost", "CostModel", "foldable"]


@runtime_checkable
class CostModel(Protocol):
    """What every cost model offers (see the module docstring)."""

    def node_cost(self, node: Node) -> float:
        """Cost of running ``node`` once (it is not free)."""

    def free_nodes(self, order: Iterable[Node], free: set[Node] | None = None) -> set[Node]:
        """The nodes of ``order`` (topological) computable from constants alone."""

    def total(self, order: Sequence[Node]) -> float:
        """Cost of the nodes ``order`` (a graph's nodes in topological order)."""

    def __call__(self, graph: Graph) -> float:
        """Cost of ``graph``."""
