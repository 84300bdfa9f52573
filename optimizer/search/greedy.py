"""Greedy search: apply the first improving rewrite until none improves (a fixed point)."""

from __future__ import annotations

import time

from optimizer.cost import CostModel
from optimizer.ir import Graph
from optimizer.passes.rewrite import apply_rules
from optimizer.rewrite.match import MatchIndex
from optimizer.search.base import Budget, SearchTrace, TraceStep


def greedy(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
) -> tuple[Graph, SearchTrace]:
    """:func:`optimizer.passes.rewrite.apply_rules` without its folding rounds (the search
    pipeline folds between rounds for every algorithm)."""
    start = time.perf_counter()
    before = cost(graph)
    result, steps = apply_rules(
        graph, rules, cost=cost, max_steps=budget.max_steps, time_limit=budget.time_limit,
        fold=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if seconds >= budget.time_limit:
        stopped = "time limit"
    elif len(steps) >= budget.max_steps:
        stopped = "budget"
    else:
        stopped = "fixed point"
    return result, SearchTrace(
        algorithm="greedy",
        cost_before=before,
        cost_after=steps[-1]["cost_after"] if steps else before,
        seconds=seconds,
        explored=len(steps) + 1,
        stopped_by=stopped,
        steps=[TraceStep(**s) for s in steps],
    )
