"""Cost models: what a search minimises.

A cost model is node-additive (:class:`CostModel`): the cost of a graph is the sum of
``node_cost`` over its nodes that constant folding would not remove (``free_nodes``). That lets
a search price a rewrite from the nodes it adds and removes alone.

- :class:`AnalyticCost` (``analytic``): FLOPs, bytes written and a per-kernel overhead, in
  FLOP-equivalents, or in seconds once calibrated on the machine (``calibrate``);
- ``measured.MeasuredCost``: each distinct op signature timed alone on onnxruntime, cached;
- ``fusion.OrtFusionCost``: wraps either so that ops onnxruntime fuses are nearly free;
- ``rerank``: the best candidates timed as whole models (and the optimizer's guard).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from optimizer.cost.analytic import LAUNCH_OVERHEAD, AnalyticCost, foldable
from optimizer.ir import Graph, Node

__all__ = ["LAUNCH_OVERHEAD", "AnalyticCost", "CostModel", "foldable"]

# The measured model, calibration and re-ranking load onnxruntime: import them from their
# modules (optimizer.cost.measured, .calibrate, .rerank) where needed.


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
