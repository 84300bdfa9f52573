"""Search: finding the cheapest equivalent graph the rule library reaches.

Every algorithm has the signature of :data:`~optimizer.search.base.SearchFn`,
``search(graph, rules, cost, budget) -> (graph, trace)``, and is registered in
:data:`ALGORITHMS`:

- ``greedy``: apply the first improving rewrite to a fixed point;
- ``taso``: TASO's cost-ordered backtracking with alpha relaxation;
- ``ocggs``: OCGGS's dynamic programming with pruning (``ocggs-prune``: the pruning-based
  exact search alone; ``ocggs-sample``: the polynomial sampling heuristic);
- ``eqsat``: equality saturation over an e-graph, extraction by ILP;
- ``auto`` (the default): picked per graph size (:func:`choose`).

:func:`run_search` is what the ``apply-rules`` pass calls: the algorithm, then constant folding
(rules with ``is_const`` conditions see the weights earlier rewrites computed), for a few rounds
while the graph changes, within one time limit.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import replace

from optimizer.cost import AnalyticCost, CostModel
from optimizer.ir import Graph
from optimizer.rewrite.match import MatchIndex, context
from optimizer.search.backtrack import taso
from optimizer.search.base import Budget, SearchFn, SearchTrace, TraceStep
from optimizer.search.greedy import greedy
from optimizer.search.ocggs import ocggs_dp, ocggs_prune, ocggs_sample
from optimizer.search.partition import PART_SIZE, partitioned

__all__ = [
    "ALGORITHMS",
    "Budget",
    "SearchTrace",
    "TraceStep",
    "algorithm",
    "choose",
    "run_search",
]

#: Graphs up to this many nodes are searched exactly by OCGGS's DP; larger ones piecewise.
EXACT_LIMIT = 80


def _eqsat() -> SearchFn:
    return importlib.import_module("optimizer.search.eqsat").eqsat


ALGORITHMS: dict[str, Callable[[], SearchFn]] = {
    "greedy": lambda: greedy,
    "taso": lambda: taso,
    "ocggs": lambda: ocggs_dp,
    "ocggs-prune": lambda: ocggs_prune,
    "ocggs-sample": lambda: ocggs_sample,
    "eqsat": _eqsat,
}

#: Names ``--search`` accepts.
NAMES: tuple[str, ...] = ("auto", *ALGORITHMS)


def _size(graph: Graph) -> int:
    return sum(1 for n in context(graph).order if not n.is_source)


def choose(graph: Graph, budget: Budget) -> str:
    """The algorithm ``auto`` runs on ``graph``: OCGGS's exact DP on small graphs, the same
    piecewise on larger ones (each part small enough to search exactly)."""
    return "ocggs" if _size(graph) <= EXACT_LIMIT else "ocggs+partition"


def algorithm(name: str) -> SearchFn:
    """The search function registered as ``name`` (``NAME+partition`` runs it piecewise)."""
    base, _, suffix = name.partition("+")
    if base not in ALGORITHMS or suffix not in ("", "partition"):
        raise ValueError(f"unknown search algorithm {name!r}; known: {', '.join(NAMES)}")
    fn = ALGORITHMS[base]()
    return partitioned(fn, PART_SIZE) if suffix else fn


def run_search(
    graph: Graph,
    rules: MatchIndex,
    *,
    name: str = "auto",
    cost: CostModel | None = None,
    budget: Budget | None = None,
    fold: Callable[[Graph], Graph] | None = None,
    rounds: int = 4,
) -> tuple[Graph, SearchTrace]:
    """Search, then ``fold``, for up to ``rounds`` rounds while the graph changes, all within
    ``budget.time_limit``; returns the graph and one trace of every round's steps."""
    cost = cost or AnalyticCost()
    budget = budget or Budget()
    start = time.perf_counter()
    chosen = choose(graph, budget) if name == "auto" else name
    search = algorithm(chosen)
    initial = cost(graph)
    steps: list[TraceStep] = []
    explored, stopped, extra = 0, "fixed point", {}
    for _ in range(rounds):
        left = budget.time_limit - (time.perf_counter() - start)
        if left <= 0:
            stopped = "time limit"
            break
        before_key = graph.key
        graph, trace = search(graph, rules, cost, replace(budget, time_limit=left))
        steps.extend(trace.steps)
        explored += trace.explored
        stopped, extra = trace.stopped_by, trace.extra
        if fold is not None:
            graph = fold(graph)
        if graph.key == before_key or not trace.steps:
            break
    return graph, SearchTrace(
        algorithm=chosen,
        cost_before=initial,
        cost_after=cost(graph),
        seconds=time.perf_counter() - start,
        explored=explored,
        stopped_by=stopped,
        steps=steps,
        extra=extra,
    )
