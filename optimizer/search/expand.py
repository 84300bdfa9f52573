"""Enumerating and applying candidate rewrites: the machinery every search shares.

An :class:`Explorer` lists the *steps* of a graph (a rule match, the values that replace its
roots, and the cost change the node-additive cost model predicts) and applies them. It caches
what is expensive across the many graphs a search visits: the replacement built for a match
(hash-consing makes a match's identity stable across graphs) and the matches of single-root
rules per node (see :meth:`~optimizer.rewrite.match.MatchIndex.matches`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from optimizer.cost import CostModel
from optimizer.ir import Graph, Node, Value
from optimizer.passes.rewrite import Pricer, describe_nodes
from optimizer.rewrite.apply import apply_match, new_nodes, replacement
from optimizer.rewrite.match import Match, MatchIndex, context
from optimizer.search.base import TraceStep


@dataclass(frozen=True)
class Step:
    """A candidate rewrite of one graph: ``delta`` is the predicted cost change."""

    match: Match
    values: tuple[Value, ...]
    delta: float

    @property
    def rule(self) -> str:
        return self.match.rule.name


class Explorer:
    """Lists and applies the steps of graphs for one search (one rule set, one cost model).

    When ``rules`` restricts matches to a region (graph partitioning, see
    :class:`optimizer.search.partition.RegionIndex`), nodes created by applied steps join it.
    """

    def __init__(self, rules: MatchIndex, cost: CostModel, opset: int | None) -> None:
        self.rules = rules
        self.cost = cost
        self.opset = opset
        self.region: set[Node] | None = getattr(rules, "region", None)
        self._built: dict[tuple, tuple[Match, tuple[Value, ...] | None]] = {}
        self._memo: dict[tuple[Node, str], list[Match]] = {}
        self.graphs_listed = 0

    def _values(self, match: Match) -> tuple[Value, ...] | None:
        cached = self._built.get(match.key)
        if cached is None:
            values = replacement(match, opset=self.opset)
            cached = self._built[match.key] = (match, tuple(values) if values else None)
        return cached[1]

    def matches(self, graph: Graph, anchors: Iterable[Node] | None = None) -> Iterator[Match]:
        if anchors is None:
            found = self.rules.matches(graph, opset=self.opset, memo=self._memo)
        else:
            found = self.rules.matches_at(graph, anchors, opset=self.opset, memo=self._memo)
        yield from found

    def steps(
        self,
        graph: Graph,
        anchors: Iterable[Node] | None = None,
        matches: Iterable[Match] | None = None,
    ) -> list[Step]:
        """Steps of ``graph``: from ``matches`` when given, else from matching ``anchors``
        (see :meth:`MatchIndex.matches_at`), else from matching the whole graph."""
        self.graphs_listed += 1
        ctx = context(graph, self.opset)
        pricer = Pricer(graph, ctx, self.cost)
        found = matches if matches is not None else self.matches(graph, anchors)
        out: list[Step] = []
        seen: set[tuple] = set()
        for match in found:
            if match.key in seen:
                continue
            seen.add(match.key)
            values = self._values(match)
            if values is None:
                continue
            out.append(Step(match, values, pricer.delta(match, values)))
        return out

    def apply(self, graph: Graph, step: Step) -> Graph | None:
        """``graph`` after ``step``, or None when the rewrite does not apply there."""
        result = apply_match(graph, step.match, opset=self.opset, values=step.values)
        if result is not None and self.region is not None:
            self.region.update(self.created(graph, step))
        return result

    def created(self, graph: Graph, step: Step) -> list[Node]:
        """The nodes ``step`` adds to ``graph`` (operands first)."""
        return new_nodes(step.values, context(graph, self.opset).position)

    def neighbourhood(self, graph: Graph, nodes: Iterable[Node]) -> set[Node]:
        """``nodes`` and their consumers up to the rules' pattern depth: every node where a
        match that includes one of ``nodes`` can have its first root."""
        ctx = context(graph, self.opset)
        frontier = {n for n in nodes if n in ctx.position}
        found = set(frontier)
        for _ in range(self.rules.max_depth):
            frontier = {
                user for n in frontier for v in n.outputs for user in ctx.consumers.get(v, ())
            } - found
            found |= frontier
        return found

    def trace_step(self, graph: Graph, step: Step, cost_before: float) -> TraceStep:
        """The trace entry of applying ``step`` to ``graph`` (whose cost is ``cost_before``)."""
        ctx = context(graph, self.opset)
        return TraceStep(
            step.rule,
            describe_nodes(graph, ctx, step.match.nodes),
            cost_before,
            cost_before + step.delta,
        )

    def prune_caches(self, graphs: Iterable[Graph]) -> None:
        """Forget cached matches of nodes in none of ``graphs`` (bounds memory in long runs)."""
        live: set[Node] = set()
        for g in graphs:
            live.update(context(g, self.opset).position)
        self._memo = {k: v for k, v in self._memo.items() if k[0] in live}
        self._built = {k: v for k, v in self._built.items() if all(n in live for n in v[0].nodes)}
