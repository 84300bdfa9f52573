"""TASO's backtracking search (Jia et al., SOSP'19, Algorithm 2).

A priority queue of graphs ordered by cost; each popped graph is expanded by every rewrite
that applies to it; a candidate enters the queue when its cost is below ``alpha`` times the
best cost found so far (alpha > 1 lets the search pass through slightly costlier graphs to
reach cheaper ones) and its structure was not seen before (graphs are hash-consed, so
``Graph.key`` identifies a structure). ``budget.max_steps`` bounds the graphs expanded.
"""

from __future__ import annotations

import heapq
import itertools
import time

from optimizer.cost import CostModel
from optimizer.ir import Graph
from optimizer.rewrite.match import MatchIndex
from optimizer.search.base import Budget, SearchTrace, TraceStep
from optimizer.search.expand import Explorer


def taso(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
) -> tuple[Graph, SearchTrace]:
    """Cost-ordered backtracking with alpha relaxation and structural deduplication."""
    start = time.perf_counter()
    deadline = budget.deadline(start)
    explorer = Explorer(rules, cost, graph.meta.opset(""))
    initial = cost(graph)
    best_graph, best_cost, best_steps = graph, initial, ()
    tie = itertools.count()
    queue: list[tuple[float, int, Graph, tuple[TraceStep, ...]]] = [(initial, 0, graph, ())]
    seen = {graph.key}
    expanded, stopped = 0, "exhausted"
    while queue:
        if time.perf_counter() > deadline:
            stopped = "time limit"
            break
        if expanded >= budget.max_steps:
            stopped = "budget"
            break
        current_cost, _, current, steps = heapq.heappop(queue)
        expanded += 1
        for step in explorer.steps(current):
            if time.perf_counter() > deadline:
                break
            new_cost = current_cost + step.delta
            if new_cost >= budget.alpha * best_cost:
                continue
            candidate = explorer.apply(current, step)
            if candidate is None or candidate.key in seen:
                continue
            seen.add(candidate.key)
            path = steps + (explorer.trace_step(current, step, current_cost),)
            if new_cost < best_cost:
                exact = cost(candidate)  # the step's price errs on the costly side only
                if exact < best_cost:
                    best_graph, best_cost, best_steps = candidate, exact, path
                new_cost = exact
            heapq.heappush(queue, (new_cost, next(tie), candidate, path))
    return best_graph, SearchTrace(
        algorithm="taso",
        cost_before=initial,
        cost_after=best_cost,
        seconds=time.perf_counter() - start,
        explored=expanded,
        stopped_by=stopped,
        steps=list(best_steps),
        extra={"graphs_seen": len(seen), "alpha": budget.alpha, "queue_left": len(queue)},
    )
