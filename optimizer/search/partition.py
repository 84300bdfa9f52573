"""Searching large graphs piecewise.

Exact searches grow exponentially with the graph; OCGGS's authors split a graph into parts of
at most 30 ops by minimum vertex cuts, search each part, then make one pass over the matches
that cross parts. graphopt splits the topological order into contiguous parts (a cut of a
chain-like DNN graph falls between consecutive layers, which is what a vertex cut finds there
too), searches each part with the matches restricted to it (nodes a part's rewrites create
join the part), and finishes with a greedy pass over the whole graph for the crossing matches.
"""

from __future__ import annotations

import time

from optimizer.cost import CostModel
from optimizer.ir import Graph, Node
from optimizer.rewrite.match import MatchIndex, context
from optimizer.search.base import Budget, SearchFn, SearchTrace
from optimizer.search.greedy import greedy

#: Default number of nodes per part.
PART_SIZE = 60


def parts_of(graph: Graph, size: int = PART_SIZE) -> list[set]:
    """The graph's nodes in topological order, cut into parts of at most ``size`` nodes."""
    order = [n for n in context(graph).order if not n.is_source]
    return [set(order[i : i + size]) for i in range(0, len(order), size)]


def partitioned(algorithm: SearchFn, size: int = PART_SIZE) -> SearchFn:
    """``algorithm`` run part by part (see the module docstring); the time limit is shared
    equally by the parts that remain, the last 10% kept for the crossing pass."""

    def search(
        graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
    ) -> tuple[Graph, SearchTrace]:
        start = time.perf_counter()
        before = cost(graph)
        parts = parts_of(graph, size)
        steps, explored, stopped = [], 0, "fixed point"
        name = getattr(algorithm, "__name__", "search")
        for k, part in enumerate(parts):
            left = budget.time_limit * 0.9 - (time.perf_counter() - start)
            if left <= 0:
                stopped = "time limit"
                break
            share = Budget(**{**budget.__dict__, "time_limit": left / (len(parts) - k)})
            graph, trace = algorithm(graph, RegionIndex(rules, set(part)), cost, share)
            steps.extend(trace.steps)
            explored += trace.explored
        left = max(0.0, budget.time_limit - (time.perf_counter() - start))
        graph, crossing = greedy(
            graph, rules, cost, Budget(**{**budget.__dict__, "time_limit": left})
        )
        steps.extend(crossing.steps)
        after = cost(graph)
        return graph, SearchTrace(
            algorithm=f"{name}+partition",
            cost_before=before,
            cost_after=after,
            seconds=time.perf_counter() - start,
            explored=explored + crossing.explored,
            stopped_by=stopped,
            steps=steps,
            extra={"parts": len(parts), "part_size": size},
        )

    search.__name__ = f"{getattr(algorithm, '__name__', 'search')}_partitioned"
    return search


class RegionIndex(MatchIndex):
    """A rule index whose matches all lie in ``region`` (a part of the graph); an
    :class:`~optimizer.search.expand.Explorer` adds the nodes its steps create to it."""

    def __init__(self, rules: MatchIndex, region: set[Node]) -> None:
        super().__init__(rules.rules)
        self.region = region

    def _matches(self, ctx, nodes, memo):
        region = self.region
        for match in super()._matches(ctx, (n for n in nodes if n in region), memo):
            if match.nodes <= region:
                yield match
