"""OCGGS: optimizing computation graphs by graph substitutions (Fang, Shen, Wang, Chen,
PVLDB 2020), as its authors' code does it (ANCHORS.md).

The problem: the cheapest graph reachable by at most K substitutions (K = ``budget.max_depth``).
Three searches share one machinery:

- **order keys**: every node has a key; nodes of the input graph ``(-1, position)``, nodes
  created by the t-th step of a sequence ``(t, index)``. A step's ``biggest`` is the largest key
  among the nodes it matched. Hash-consing gives OCGGS's memoization for free: the same
  rewrite at the same place builds the identical nodes in every branch. graphopt's IR is
  immutable, so a rewrite rebuilds every node downstream of it; a rebuilt node keeps its
  *lineage* (the :class:`~optimizer.ir.NodeMeta` object, which :func:`~optimizer.ir.transform`
  carries over), and keys belong to lineages, so a rebuilt node keeps its key.
- **pruning** (exact, :func:`ocggs_prune`): a step may follow the previous one only if its
  ``biggest`` is larger. A step that uses a node the previous step created always passes (that
  node's key is larger than anything the previous step matched); independent steps survive in
  one canonical order only, so each set of independent substitutions is explored once.
- **dynamic programming with pruning** (exact, :func:`ocggs_dp`): a search-tree node's
  children are (a) the matches that include a node its last step created, found by matching
  only around those nodes, and (b) its parent's other candidate steps that share no matched
  node with the last step and pass the order check, replayed without matching again (those
  whose nodes the last step rebuilt are matched again at their rebuilt root only).
- **sampling** (polynomial, :func:`ocggs_sample`): level by level, keep the
  ``sample_size / 2`` cheapest cost-decreasing graphs and the ``sample_size / 2``
  cost-increasing graphs with the best one-step follow-up gain; expand each kept
  cost-increasing graph once more and keep its improving children; those and the kept
  decreasing graphs form the next level. This is what lets a costlier step (enlarging a
  kernel) reach a cheaper graph (merging convolutions).

The exact searches also bound the cost as TASO does (a branch is cut once its cost reaches
``alpha`` times the best found), visit cheaper steps first, skip structures already reached at
the same or a smaller depth, and stop at the budget's time limit.

Known gaps, kept deliberately: multi-root rules are matched afresh around new nodes in (a) and
their inherited matches in (b) are revalidated only by their nodes being present, so a
multi-root match that appears because a consumer changed elsewhere may be missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from optimizer.cost import CostModel
from optimizer.ir import Graph, Node, NodeMeta
from optimizer.rewrite.match import MatchIndex, context
from optimizer.search.base import Budget, SearchTrace, TraceStep
from optimizer.search.expand import Explorer, Step

OrderKey = tuple[int, int]


@dataclass
class _Best:
    graph: Graph
    cost: float
    steps: tuple[TraceStep, ...] = ()


@dataclass
class _Run:
    """State shared by one exact search."""

    explorer: Explorer
    cost: CostModel
    budget: Budget
    deadline: float
    best: _Best
    visited: dict[tuple, int] = field(default_factory=dict)
    expanded: int = 0
    stopped: str = "exhausted"

    def out_of_budget(self) -> bool:
        if time.perf_counter() > self.deadline:
            self.stopped = "time limit"
            return True
        if self.expanded >= self.budget.max_steps:
            self.stopped = "budget"
            return True
        return False


Keys = dict[int, OrderKey]  # id(NodeMeta) -> key


def with_lineage(graph: Graph) -> Graph:
    """``graph`` with a NodeMeta of its own on every node (a node's lineage token)."""
    missing = {n: NodeMeta() for n in graph.nodes() if not n.is_source and n not in graph.node_meta}
    if not missing:
        return graph
    return replace(graph, node_meta={**graph.node_meta, **missing})


def _lineage(graph: Graph, node: Node) -> int | None:
    meta = graph.node_meta.get(node)
    return None if meta is None else id(meta)


def _key(graph: Graph, node: Node, keys: Keys) -> OrderKey:
    lineage = _lineage(graph, node)
    return keys.get(lineage, (-1, -1)) if lineage is not None else (-1, -1)


def _biggest(graph: Graph, step: Step, keys: Keys) -> OrderKey:
    return max(_key(graph, n, keys) for n in step.match.nodes)


def _exact(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget, *, dp: bool
) -> tuple[Graph, SearchTrace]:
    start = time.perf_counter()
    graph = with_lineage(graph)
    explorer = Explorer(rules, cost, graph.meta.opset(""))
    initial = cost(graph)
    run = _Run(
        explorer=explorer, cost=cost, budget=budget, deadline=budget.deadline(start),
        best=_Best(graph, initial),
    )  # fmt: skip
    original: Keys = {
        id(graph.node_meta[n]): (-1, i) for i, n in enumerate(context(graph).order)
        if n in graph.node_meta
    }  # fmt: skip

    def children(g: Graph, parent: Graph | None, last: Step | None, made, inherited):
        """The candidate steps of ``g`` (DP: local matching plus replayed parent steps)."""
        if not dp or parent is None or last is None or inherited is None:
            return explorer.steps(g)
        ctx = context(g)
        by_lineage = {_lineage(g, n): n for n in ctx.order}
        anchors = set(made)
        replay = []
        for s in inherited:
            if not s.match.nodes.isdisjoint(last.match.nodes):
                continue
            if all(n in ctx.position for n in s.match.nodes):
                replay.append(s.match)
                continue
            rebuilt = by_lineage.get(_lineage(parent, s.match.roots[0].node))
            if rebuilt is not None:
                anchors.add(rebuilt)  # rebuilt downstream of the last step: match it again
        local = explorer.matches(g, explorer.neighbourhood(g, anchors))
        return explorer.steps(g, matches=[*local, *replay])

    def visit(g, g_cost, keys, parent, last, depth, steps, made, inherited) -> None:
        if depth >= budget.max_depth or run.out_of_budget():
            return
        run.expanded += 1
        candidates = children(g, parent, last[0] if last else None, made, inherited)
        ranked = []
        for step in candidates:
            biggest = _biggest(g, step, keys)
            if last is not None and not last[1] < biggest:
                continue  # not the canonical order of independent steps
            new_cost = g_cost + step.delta
            if new_cost >= budget.alpha * run.best.cost:
                continue
            ranked.append((new_cost, biggest, step))
        ranked.sort(key=lambda r: (r[0], r[1]))
        for new_cost, biggest, step in ranked:
            if run.out_of_budget():
                return
            created = explorer.created(g, step)
            child = explorer.apply(g, step)
            if child is None:
                continue
            seen_depth = run.visited.get(child.key)
            if seen_depth is not None and seen_depth <= depth + 1:
                continue
            run.visited[child.key] = depth + 1
            path = steps + (explorer.trace_step(g, step, g_cost),)
            if new_cost < run.best.cost:
                exact = cost(child)
                if exact < run.best.cost:
                    run.best = _Best(child, exact, path)
                new_cost = exact
            child_keys = dict(keys)
            for i, node in enumerate(created):
                lineage = _lineage(child, node)
                if lineage is not None:
                    child_keys[lineage] = (depth, i)
            others = [s for s in candidates if s is not step] if dp else None
            visit(child, new_cost, child_keys, g, (step, biggest), depth + 1, path, created,
                  others)  # fmt: skip

    run.visited[graph.key] = 0
    visit(graph, initial, original, None, None, 0, (), [], None)
    return run.best.graph, SearchTrace(
        algorithm="ocggs-dp" if dp else "ocggs-prune",
        cost_before=initial,
        cost_after=run.best.cost,
        seconds=time.perf_counter() - start,
        explored=run.expanded,
        stopped_by=run.stopped,
        steps=list(run.best.steps),
        extra={"graphs_seen": len(run.visited), "max_depth": budget.max_depth,
               "step_lists": explorer.graphs_listed},
    )  # fmt: skip


#: An exact search restarts from its best graph after this share of its time limit.
RESTART_SHARE = 0.25


def _restarting(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget, *, dp: bool
) -> tuple[Graph, SearchTrace]:
    """The exact search in time slices, each restarting from the best graph so far.

    A depth-first search over sequences of K steps spends its time in the subtree of its first
    child when a graph offers many neutral steps (72 independent Gemm weight transpositions
    in NasRNN: C(72, 6) canonical sequences). Cutting the time into slices and restarting from
    the best graph found makes each slice a K-step lookahead from a better point; a slice that
    finds nothing better ends the search. Each slice is exact within its limits.
    """
    start = time.perf_counter()
    deadline = budget.deadline(start)
    current, trace = graph, None
    steps: list[TraceStep] = []
    explored = slices = 0
    initial = None
    while True:
        left = deadline - time.perf_counter()
        if left <= 0 and trace is not None:
            break
        share = max(min(left, budget.time_limit * RESTART_SHARE), 0.0)
        sliced = replace(budget, time_limit=share, max_steps=budget.max_steps - explored)
        current, trace = _exact(current, rules, cost, sliced, dp=dp)
        slices += 1
        initial = trace.cost_before if initial is None else initial
        steps.extend(trace.steps)
        explored += trace.explored
        if not trace.steps or explored >= budget.max_steps or left <= 0:
            break  # a K-step lookahead from the best graph finds nothing better
    stopped = trace.stopped_by if time.perf_counter() < deadline else "time limit"
    if explored >= budget.max_steps:
        stopped = "budget"
    return current, replace(
        trace, cost_before=initial, seconds=time.perf_counter() - start, explored=explored,
        steps=steps, stopped_by=stopped, extra={**trace.extra, "slices": slices},
    )  # fmt: skip


def ocggs_prune(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
) -> tuple[Graph, SearchTrace]:
    """The pruning-based exact search (see the module docstring), in restarting slices."""
    return _restarting(graph, rules, cost, budget, dp=False)


def ocggs_dp(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
) -> tuple[Graph, SearchTrace]:
    """Dynamic programming with pruning (see the module docstring), in restarting slices."""
    return _restarting(graph, rules, cost, budget, dp=True)


@dataclass(frozen=True)
class _Candidate:
    cost: float
    order: int
    graph: Graph
    steps: tuple[TraceStep, ...]


def ocggs_sample(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
) -> tuple[Graph, SearchTrace]:
    """The sampling heuristic (see the module docstring). Deterministic (ties broken by
    discovery order); runs until a level improves on the best graph no more, or the time
    limit, or ``max_steps`` expansions."""
    start = time.perf_counter()
    deadline = budget.deadline(start)
    explorer = Explorer(rules, cost, graph.meta.opset(""))
    initial = cost(graph)
    best = _Candidate(initial, 0, graph, ())
    seen = {graph.key}
    counter = iter(range(1, 1 << 62))
    expanded, stopped = 0, "exhausted"
    half = max(1, budget.sample_size // 2)

    def children(parent: _Candidate) -> list[_Candidate]:
        nonlocal expanded
        expanded += 1
        out = []
        for step in explorer.steps(parent.graph):
            if time.perf_counter() > deadline:
                break
            child = explorer.apply(parent.graph, step)
            if child is None or child.key in seen:
                continue
            seen.add(child.key)
            path = parent.steps + (explorer.trace_step(parent.graph, step, parent.cost),)
            out.append(_Candidate(parent.cost + step.delta, next(counter), child, path))
        return out

    def cheapest(items: list[_Candidate], k: int, key: Callable = lambda c: c.cost):
        return sorted(items, key=lambda c: (key(c), c.order))[:k]

    level = [best]
    while level:
        if time.perf_counter() > deadline:
            stopped = "time limit"
            break
        if expanded >= budget.max_steps:
            stopped = "budget"
            break
        decreasing: list[_Candidate] = []
        increasing: list[tuple[_Candidate, _Candidate]] = []  # (child, its parent)
        for parent in level:
            for child in children(parent):
                if child.cost < parent.cost:
                    decreasing.append(child)
                else:
                    increasing.append((child, parent))
        kept = cheapest(decreasing, half)
        # A costlier step is worth keeping for the gain of its best follow-up step.
        gains: list[tuple[float, int, _Candidate, _Candidate]] = []
        for child, parent in sorted(increasing, key=lambda cp: (cp[0].cost, cp[0].order))[
            : 4 * half
        ]:
            if time.perf_counter() > deadline:
                break
            follow = [s.delta for s in explorer.steps(child.graph)]
            if follow:
                gains.append((child.cost + min(follow), child.order, child, parent))
        gains.sort(key=lambda g: (g[0], g[1]))
        for _, _, child, parent in gains[:half]:
            if time.perf_counter() > deadline:
                break
            kept.extend(c for c in children(child) if c.cost < parent.cost)
        level = cheapest(kept, 2 * half)
        improved = False
        for cand in level:
            if cand.cost < best.cost:
                exact = cost(cand.graph)
                if exact < best.cost:
                    best = _Candidate(exact, cand.order, cand.graph, cand.steps)
                    improved = True
        if not improved:
            stopped = "fixed point"
            break
    return best.graph, SearchTrace(
        algorithm="ocggs-sample",
        cost_before=initial,
        cost_after=best.cost,
        seconds=time.perf_counter() - start,
        explored=expanded,
        stopped_by=stopped,
        steps=list(best.steps),
        extra={"graphs_seen": len(seen), "sample_size": budget.sample_size},
    )
