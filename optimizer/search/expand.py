"""Enumerating and applying candidate rewrites: the machinery every search shares.

An :class:`Explorer` lists the *steps* of a graph (a rule match, the values that replace its
roots, and the cost change the node-additive cost model predicts) and applies them. It caches
what is expensive across the many graphs a search visits: the replacement built for a match
(hash-consing makes a match's identity stable across graphs) and the matches of single-root
rules per node (see :meth:`~optimizer.rewrite.match.MatchIndex.matches`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from optimizer.cost import CostModel
from optimizer.ir import Graph, Node, NodeMeta, Value, transform
from optimizer.passes.rewrite import Pricer, describe_nodes
from optimizer.rewrite.apply import apply_match, exists_in, new_nodes, replacement
from optimizer.rewrite.match import GraphContext, Match, MatchIndex, context
from optimizer.rewrite.rule import Op
from optimizer.search.base import TraceStep


def _depth(p) -> int:
    """Edges from a pattern's root to its deepest ``Op``."""
    if not isinstance(p, Op):
        return -1
    return 1 + max((_depth(a) for a in p.args), default=-1)


def _op_key(node: Node) -> tuple[str, str]:
    """A node's key in :attr:`MatchIndex.by_op`."""
    return ("" if node.domain in ("", "ai.onnx") else node.domain, node.op)


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
        # The property walks every rule's patterns; neighbourhoods ask for it per graph.
        self.max_depth = rules.max_depth
        self._depth_by_op = {
            op: max(max(_depth(p) for p in r.match) for r in rs) for op, rs in rules.by_op.items()
        }

    def context(self, graph: Graph) -> GraphContext:
        """The matching context of ``graph``, shared with the cost model and
        :func:`~optimizer.rewrite.apply.apply_match` (both ask for the graph's own opset:
        asking for it by number would build a second context of every graph)."""
        return context(graph, self._opset_key(graph))

    def _opset_key(self, graph: Graph) -> int | None:
        return None if self.opset == graph.meta.opset("") else self.opset

    def _values(self, match: Match) -> tuple[Value, ...] | None:
        cached = self._built.get(match.key)
        if cached is None:
            values = replacement(match, opset=self.opset)
            cached = self._built[match.key] = (match, tuple(values) if values else None)
        return cached[1]

    def matches(self, graph: Graph, anchors: Iterable[Node] | None = None) -> Iterator[Match]:
        opset = self._opset_key(graph)
        if anchors is None:
            found = self.rules.matches(graph, opset=opset, memo=self._memo)
        else:
            found = self.rules.matches_at(graph, anchors, opset=opset, memo=self._memo)
        yield from found

    def steps(
        self,
        graph: Graph,
        anchors: Iterable[Node] | None = None,
        matches: Iterable[Match] | None = None,
        deadline: float | None = None,
    ) -> list[Step]:
        """Steps of ``graph``: from ``matches`` when given, else from matching ``anchors``
        (see :meth:`MatchIndex.matches_at`), else from matching the whole graph. Past
        ``deadline`` (a perf_counter value) the list ends early."""
        self.graphs_listed += 1
        ctx = self.context(graph)
        pricer = Pricer(graph, ctx, self.cost)
        found = matches if matches is not None else self.matches(graph, anchors)
        out: list[Step] = []
        seen: set[tuple] = set()
        for match in found:
            if deadline is not None and time.perf_counter() > deadline:
                break
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

    def apply_all(self, graph: Graph, steps: Iterable[Step]) -> tuple[Graph, list[Step]] | None:
        """``graph`` after the single-root ``steps`` (no two matching one node) in one rebuild,
        and the steps applied. A step whose bound values an earlier (upstream) step rebuilt
        is built again over the rebuilt values; one that cannot be (its rewrite refuses them,
        a value changed from or to a constant) is left out. None when nothing applies, when a
        created op is missing from the model's opset, or when a node that must stay would go.
        """
        ctx = self.context(graph)
        by_root = {s.match.roots[0].node: s for s in steps if len(s.match.roots) == 1}
        moved: dict[Value, Value] = {}  # old value -> its value in the result
        applied: list[Step] = []
        created: dict[Node, str] = {}

        def rewrite(node: Node, inputs: list[Value | None]) -> list[Value] | None:
            step = by_root.get(node)
            values = None if step is None else self._rebuilt(step, moved)
            if values is None:
                caps = {name: moved.get(v, v) for name, v in node.captures}
                same = all(a is b for a, b in zip(inputs, node.inputs)) and all(
                    caps[n] is v for n, v in node.captures
                )
                if not same:  # what transform builds (hash-consing returns that very node)
                    rebuilt = node.with_inputs(inputs, caps)
                    moved.update(zip(node.outputs, rebuilt.outputs, strict=True))
                return None
            applied.append(step)
            for made in new_nodes(values, ctx.position):
                created.setdefault(made, step.rule)
            out = [values[0] if v is step.match.roots[0] else v for v in node.outputs]
            moved.update(zip(node.outputs, out, strict=True))
            return out

        result = transform(graph, rewrite)
        if not applied or not all(exists_in(n, graph.meta) for n in created):
            return None
        live = set(result.nodes())
        if any(n not in live for n in ctx.protected):
            return None
        meta = dict(result.node_meta)
        for node, rule in created.items():
            if node in live and node not in meta:
                meta[node] = NodeMeta(provenance=rule)
        if self.region is not None:
            self.region.update(created)
        return dataclasses.replace(result, node_meta=meta), applied

    def _rebuilt(self, step: Step, moved: dict[Value, Value]) -> tuple[Value, ...] | None:
        """``step``'s replacement over the values its bound values moved to."""
        match = step.match
        tensors = {k: moved.get(v, v) for k, v in match.tensors.items()}
        if all(tensors[k] is v for k, v in match.tensors.items()):
            return step.values
        if any(tensors[k].is_constant != v.is_constant for k, v in match.tensors.items()):
            return None  # a precondition may read constness: not the match it was
        values = replacement(dataclasses.replace(match, tensors=tensors), opset=self.opset)
        return None if values is None else tuple(values)

    def created(self, graph: Graph, step: Step) -> list[Node]:
        """The nodes ``step`` adds to ``graph`` (operands first)."""
        return new_nodes(step.values, self.context(graph).position)

    def neighbourhood(
        self, graph: Graph, nodes: Iterable[Node], depth: int | None = None
    ) -> set[Node]:
        """``nodes`` and the consumers where a match that includes one of them can have its
        first root: a consumer ``d`` edges below only when a rule rooted at its op has a
        pattern at least ``d`` deep (most are one or two deep; the deepest, eight, would
        otherwise pull in a whole recurrent cell). ``depth`` caps the distance."""
        ctx = self.context(graph)
        frontier = {n for n in nodes if n in ctx.position}
        found = set(frontier)
        reached = set(frontier)
        limit = self.max_depth if depth is None else min(depth, self.max_depth)
        for d in range(1, limit + 1):
            frontier = {
                user for n in frontier for v in n.outputs for user in ctx.consumers.get(v, ())
            } - reached
            reached |= frontier
            found.update(n for n in frontier if self._depth_by_op.get(_op_key(n), -1) >= d)
        return found

    def trace_step(self, graph: Graph, step: Step, cost_before: float) -> TraceStep:
        """The trace entry of applying ``step`` to ``graph`` (whose cost is ``cost_before``)."""
        ctx = self.context(graph)
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
            live.update(self.context(g).position)
        self._memo = {k: v for k, v in self._memo.items() if k[0] in live}
        self._built = {k: v for k, v in self._built.items() if all(n in live for n in v[0].nodes)}
