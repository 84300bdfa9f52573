"""Search: finding the cheapest equivalent graph the rule library reaches.

Every algorithm has the signature of :data:`~optimizer.search.base.SearchFn`,
``search(graph, rules, cost, budget) -> (graph, trace)``, and is registered in
:data:`ALGORITHMS`:

- ``greedy``: apply the first improving rewrite to a fixed point;
- ``taso``: TASO's cost-ordered backtracking with alpha relaxation;
- ``ocggs``: OCGGS's dynamic programming with pruning (``ocggs-prune``: the pruning-based
  exact search alone; ``ocggs-sample``: the polynomial sampling heuristic);
- ``eqsat``: equality saturation over an e-graph, extraction by ILP;
- ``auto`` (the default): picked per graph (:func:`choose`): OCGGS, then eqsat;
- ``A>B``: ``A``, then ``B`` from ``A``'s result, sharing the time limit.

:func:`run_search` is what the ``apply-rules`` pass calls: the algorithm, then constant folding
(rules with ``is_const`` conditions see the weights earlier rewrites computed), for a few rounds
while the graph changes, within one time limit.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable
from dataclasses import replace

from optimizer.cost import AnalyticCost, CostModel
from optimizer.ir import Graph
from optimizer.rewrite.match import MatchIndex
from optimizer.search.backtrack import taso
from optimizer.search.base import (
    Budget,
    SearchFn,
    SearchTrace,
    TraceStep,
    collector_paused,
    record,
)
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

#: Share of the time limit the first search of a sequence ``A>B`` gets at most.
FIRST_SHARE = 0.3


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

#: A search round is started only with at least this share of the time limit left.
MIN_ROUND_SHARE = 0.05

#: Names ``--search`` accepts.
NAMES: tuple[str, ...] = ("auto", *ALGORITHMS)


def choose(graph: Graph, budget: Budget) -> str:
    """The algorithm ``auto`` runs on ``graph``: OCGGS (its descent takes every improving
    rewrite of a whole-graph matching at once, then its lookahead takes the two-step ones),
    then equality saturation from its result (the multi-step rewrites neither can see).

    OCGGS rather than greedy first: greedy restarts its walk after every rewrite, and on
    NASNet-A (651 nodes, 80 rewrites) it needed 7 s to reach its fixed point where OCGGS's
    descent got further in its 3 s share of the default 10 s; the two agree on the other
    `taso` models (benchmarks/RESULTS.md, search side by side)."""
    return "ocggs>eqsat"


def _sequence(first: SearchFn, second: SearchFn, name: str) -> SearchFn:
    def search(
        graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
    ) -> tuple[Graph, SearchTrace]:
        start = time.perf_counter()
        graph, a = first(graph, rules, cost, replace(budget, time_limit=budget.time_limit
                                                     * FIRST_SHARE))  # fmt: skip
        left = max(budget.time_limit - (time.perf_counter() - start), 0.0)
        graph, b = second(graph, rules, cost, replace(budget, time_limit=left))
        return graph, SearchTrace(
            algorithm=name, cost_before=a.cost_before, cost_after=b.cost_after,
            seconds=time.perf_counter() - start, explored=a.explored + b.explored,
            stopped_by=b.stopped_by, steps=[*a.steps, *b.steps],
            extra={a.algorithm: a.extra, b.algorithm: b.extra},
        )  # fmt: skip

    search.__name__ = name
    return search


def algorithm(name: str) -> SearchFn:
    """The search function registered as ``name``: ``NAME+partition`` runs it piecewise,
    ``A>B`` runs ``B`` from ``A``'s result."""
    if ">" in name:
        first, _, second = name.partition(">")
        return _sequence(algorithm(first), algorithm(second), name)
    base, _, suffix = name.partition("+")
    if base not in ALGORITHMS or suffix not in ("", "partition"):
        raise ValueError(f"unknown search algorithm {name!r}; known: {', '.join(NAMES)}")
    fn = ALGORITHMS[base]()
    return _recorded(partitioned(fn, PART_SIZE) if suffix else fn)


def _recorded(fn: SearchFn) -> SearchFn:
    """``fn`` run with the cyclic garbage collector paused (:func:`collector_paused`), and
    reporting each call's graphs and steps to an opt-in
    :func:`~optimizer.search.base.recording` (explained optimization replays them)."""

    @functools.wraps(fn)
    def search(
        graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
    ) -> tuple[Graph, SearchTrace]:
        with collector_paused():
            result, trace = fn(graph, rules, cost, budget)
        record(trace.algorithm, graph, result, tuple(trace.steps))
        return result, trace

    return search


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
        if left < MIN_ROUND_SHARE * budget.time_limit:
            # A round's fixed costs (listing the matches, pricing the whole graph) are
            # not cut by its deadline: a round started with milliseconds left overruns.
            stopped = "time limit"
            break
        before_key = graph.key
        # The margin leaves time for the fold that follows and for steps that cannot be
        # cut.
        graph, trace = search(graph, rules, cost, replace(budget, time_limit=left * 0.9))
        steps.extend(trace.steps)
        explored += trace.explored
        stopped, extra = trace.stopped_by, trace.extra
        searched = graph.key
        if fold is not None:
            unfolded, graph = graph, fold(graph)
            record("fold", unfolded, graph)
        if graph.key in (before_key, searched) or not trace.steps or stopped == "time limit":
            # Unchanged by the fold, the graph is where this round's search ended: the
            # next round would search it again.
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
