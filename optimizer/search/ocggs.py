"""OCGGS: optimizing computation graphs by graph substitutions (Fang, Shen, Wang, Chen,
PVLDB 2020), as its authors' code does it (ANCHORS.md), made to finish fast.

The problem: the cheapest graph reachable by at most K substitutions (K = ``budget.max_depth``).
Three searches share one machinery (the exact two search K-step sequences in a lookahead from
a descent's graph, with the dominance rules of "What makes it fast" below):

- **order keys**: every node has a key; nodes of the input graph ``(-1, position)``, nodes
  created by the t-th step of a sequence ``(t, index)``. A step's ``biggest`` is the largest key
  among the nodes it matched. Hash-consing gives OCGGS's memoization for free: the same
  rewrite at the same place builds the identical nodes in every branch. graphopt's IR is
  immutable, so a rewrite rebuilds every node downstream of it; a rebuilt node keeps its
  *lineage* (the :class:`~optimizer.ir.NodeMeta` object, which :func:`~optimizer.ir.transform`
  carries over), and keys belong to lineages, so a rebuilt node keeps its key.
- **pruning** (:func:`ocggs_prune`): a step may follow the previous one only if its
  ``biggest`` is larger. A step that uses a node the previous step created always passes (that
  node's key is larger than anything the previous step matched); independent steps survive in
  one canonical order only, so each set of independent substitutions is explored once.
- **dynamic programming with pruning** (:func:`ocggs_dp`, ``--search ocggs``): a search-tree node's
  children are (a) the matches that include a node its last step created (or share an input
  with one: the second root of a merge), found by matching only around those nodes, and (b)
  its parent's other candidate steps that share no matched node with the last step and pass
  the order check, replayed without matching again (those whose nodes the last step rebuilt
  are matched again at their rebuilt root only).
- **sampling** (polynomial, :func:`ocggs_sample`): from the descent's graph, level by level,
  keep the ``sample_size / 2`` cheapest cost-decreasing graphs and the ``sample_size / 2``
  cost-increasing graphs with the best one-step follow-up gain; expand each kept
  cost-increasing graph once more and keep its improving children; those and the kept
  decreasing graphs form the next level. This is what lets a costlier step (enlarging a
  kernel) reach a cheaper graph (merging convolutions).

The lookahead also bounds the cost as TASO does (a branch is cut once its cost reaches
``alpha`` times the best found), visit cheaper steps first, skip structures already reached at
the same or a smaller depth, and stop at the budget's time limit (checked inside every loop
over steps).

**What makes it fast** (the search issue: TASO's reduction in a tenth of its time). The first
version searched K-step sequences over the whole graph in time slices. On graphs with many
neutral or slightly costlier rewrites (72 Gemm weight transpositions in NasRNN, a hundred
kernel enlargements in NASNet-A, fire modules in SqueezeNet) it spent its time on sets of
unrelated such steps (C(n, K) canonical sequences), re-priced every step of every graph, never
finished a slice that found nothing (2.3 s on SqueezeNet, Inception, ResNeXt where nothing is
to be found) and overran its time limit on NASNet-A (one listing of its steps took 0.6 s). Now
(sound for a node-additive cost, where a graph's cost is the sum of its nodes' and rewrites of
unrelated regions commute and add):

1. **descent first** (:meth:`_Search.descend`): every step that lowers the cost by itself is
   taken without search, in rounds: one matching of the graph per round, then the improving
   steps that share no node, best first, applied downstream first (a rewrite rebuilds only
   what lies downstream of it, so upstream matches stay valid). The prices err on the costly
   side only, so a round is priced exactly once, at its end (a round whose steps interfered
   so that it gained nothing is redone checking each step). The lookahead starts from there,
   so the search never ends worse than this descent.
2. **local sequences** (:meth:`_Search._subtree`): after its first step a sequence may only
   take steps that touch what earlier steps touched (a created node, a node reading one, a
   node sharing an input with one, a reader of a replaced value): a sequence mixing unrelated
   regions is never better than its best region alone plus the others found later. And a
   costlier step (one that does not lower the cost) must be used (a later step matches what
   it made) by one of the next two steps, with at most two waiting at once (the two sides of
   a merge): a costlier step nothing uses only adds its cost. This turns C(n, K) subsets of
   n neutral steps into n short local chains. New nodes are matched again only within
   ``LOCAL_DEPTH`` edges (the patterns that continue a costlier step are shallow).
3. **passes, first improvement**: a lookahead pass opens one subtree per first step, downstream
   first; a subtree ends at its first graph cheaper than its root, which the pass takes
   before going on upstream (the first steps still ahead stay valid). After a pass that
   improved, the search descends and passes again; it ends when a pass finds nothing
   (``fixed point``). All passes together get a share of the time limit
   (``LOOKAHEAD_SHARE``, ``LOOKAHEAD_RATIO``).
4. **what failed is not tried again**: a first step whose subtree found nothing is skipped in
   later passes while its nodes stay unchanged (its match key stays the same exactly then),
   and so is any first step whose surroundings within ``SIGNATURE_RADIUS`` edges have the same
   structure (:func:`_signature`: ops, attributes, types, small integer constants, edges):
   the same rewrite in another copy of a repeated cell (NasRNN's steps, NASNet-A's cells,
   BERT's layers) has the same local sequences and prices.

Known gaps, kept deliberately: multi-root rules are matched afresh around new nodes in (a) and
their inherited matches in (b) are revalidated only by their nodes being present, so a
multi-root match that appears because a consumer changed elsewhere may be missed; a
connected group of steps whose canonical order starts with two steps that touch nothing in
common is missed; so is a payoff that needs more than two costlier steps at once (rewriting
every reader of a shared value before the value can go: TASO finds that, slowly); and a
signature describes a few edges only, so two cells alike there but different further away
share their verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from itertools import chain

from optimizer.cost import CostModel
from optimizer.ir import Graph, Node, NodeMeta, Value
from optimizer.passes.rewrite import TIE_SLACK
from optimizer.rewrite.match import Match, MatchIndex
from optimizer.search.base import Budget, SearchTrace, TraceStep
from optimizer.search.expand import Explorer, Step

OrderKey = tuple[int, int]
Keys = dict[int, OrderKey]  # lineage token -> key


@dataclass
class _Best:
    graph: Graph
    cost: float
    steps: tuple[TraceStep, ...] = ()


def with_lineage(graph: Graph) -> Graph:
    """``graph`` with a NodeMeta of its own on every node (a node's lineage token)."""
    missing = {n: NodeMeta() for n in graph.nodes() if not n.is_source and n not in graph.node_meta}
    if not missing:
        return graph
    return replace(graph, node_meta={**graph.node_meta, **missing})


def _token(graph: Graph, node: Node) -> int:
    """A node's lineage token: its NodeMeta's id (kept when a rewrite rebuilds the node), or
    for a source (never rebuilt) its own id."""
    meta = graph.node_meta.get(node)
    return id(node) if meta is None else id(meta)


def _key(graph: Graph, node: Node, keys: Keys) -> OrderKey:
    return keys.get(_token(graph, node), (-1, -1))


def _biggest(graph: Graph, match: Match, keys: Keys) -> OrderKey:
    return max(_key(graph, n, keys) for n in match.nodes)


def _local(graph: Graph, match: Match, touched: frozenset[int]) -> bool:
    """Whether ``match`` includes a touched node or a node reading one's output."""
    for node in match.nodes:
        if _token(graph, node) in touched:
            return True
        if any(_token(graph, v.node) in touched for v in node.operands):
            return True
    return False


#: Consumers this far below a new node are matched again in the lookahead: the patterns
#: that continue a costlier step (merges, enlargements, transpositions) are shallow; deep
#: fusions (layer norm, GELU: eight levels) that become possible are improving steps on their
#: own, which the next descent finds.
LOCAL_DEPTH = 2
#: A costlier step must be used by one of the next ``PENDING_AGE + 1`` steps ...
PENDING_AGE = 1
#: ... and at most this many may wait for theirs at once (two sides of a merge).
MAX_PENDING = 2

Pending = tuple[tuple[frozenset[int], int], ...]


def _unused(graph: Graph, match: Match, pending: Pending) -> Pending | None:
    """The pending steps a step of ``match`` does not use, a step older; None when one of
    them is too old to wait any longer."""
    tokens = {_token(graph, n) for n in match.nodes}
    left = []
    for made, age in pending:
        if tokens.isdisjoint(made):
            if age >= PENDING_AGE:
                return None
            left.append((made, age + 1))
    return tuple(left)


def _touched_by(child: Graph, ctx, created: list[Node], values: Iterable[Value]) -> set[int]:
    """Tokens of what a step touched in ``child``: the nodes it created and the producers of
    their inputs (so siblings, which read those, count as local), and the nodes that now
    read its replacement values."""
    out: set[int] = set()
    for node in created:
        out.add(_token(child, node))
        out.update(_token(child, v.node) for v in node.operands)
    for value in values:
        out.add(_token(child, value.node))
        out.update(_token(child, user) for user in ctx.consumers.get(value, ()))
    return out


#: The lookahead passes of one call get in all at most this share of its time limit, and at
#: most ``LOOKAHEAD_RATIO`` times the seconds its descents took (at least ``LOOKAHEAD_FLOOR``):
#: the search pipeline calls the search again after folding constants, and a call on a graph
#: the previous call left at a fixed point (its descent finds little) should end soon.
LOOKAHEAD_SHARE = 0.1
LOOKAHEAD_RATIO = 1.0
LOOKAHEAD_FLOOR = 0.3
#: Edges around a first step that its signature describes, and the most nodes it may hold.
SIGNATURE_RADIUS = 2
SIGNATURE_NODES = 256


def _describe(node: Node) -> tuple:
    if node.is_constant:
        # Shapes, axes and scalars steer rules; the contents of weights (which differ from
        # one copy of a cell to the next) do not.
        data = node.attr("value")
        small = data.size <= 1 or (data.size <= 64 and data.dtype.name.startswith(("INT", "UINT")))
        return ("const", node.outputs[0].type, data.digest if small else None)
    if node.is_source:
        return ("input", node.outputs[0].type)
    return (node.op, node.domain, node.attrs, tuple(v.type for v in node.outputs))


def _signature(ctx, step: Step) -> tuple | None:
    """The structure within ``SIGNATURE_RADIUS`` edges of ``step``'s roots (ops, attributes,
    types, small constants' contents, edges, consumer counts), in discovery order: equal for
    the same rewrite in two copies of a repeated cell. None when the surroundings are too big
    (or hold something unhashable)."""
    index: dict[Node, int] = {}
    order: list[Node] = []

    def add(node: Node, into: list[Node]) -> None:
        if node not in index:
            index[node] = len(order)
            order.append(node)
            into.append(node)

    frontier: list[Node] = []
    for root in step.match.roots:
        add(root.node, frontier)
    for _ in range(SIGNATURE_RADIUS):
        reached: list[Node] = []
        for node in frontier:
            if node.is_source:
                continue
            for v in node.operands:
                add(v.node, reached)
            for v in node.outputs:
                for user in ctx.consumers.get(v, ()):
                    add(user, reached)
        frontier = reached
        if len(order) > SIGNATURE_NODES:
            return None
    # A deep pattern (Gelu's, say) matches nodes beyond the radius: they belong to the step.
    for node in sorted(step.match.nodes, key=lambda n: ctx.position.get(n, -1)):
        add(node, [])
    entries = []
    for node in order:
        links = tuple((index.get(v.node, -1), v.index) for v in node.operands)
        uses = tuple(len(ctx.consumers.get(v, ())) for v in node.outputs)
        entries.append((_describe(node), links, uses))
    signature = (step.rule, tuple(sorted(index[n] for n in step.match.nodes)), tuple(entries))
    try:
        hash(signature)
    except TypeError:
        return None
    return signature


@dataclass
class _Search:
    """State of one exact search: its limits, caches and counters, across restarts."""

    explorer: Explorer
    cost: CostModel
    budget: Budget
    deadline: float
    dp: bool
    expanded: int = 0
    stopped: str = "fixed point"
    lookaheads: int = 0
    descents: int = 0
    graphs_seen: int = 0
    #: First steps whose K-step subtree found nothing, by match key (the match kept alive so
    #: that the ids in its key stay valid).
    fruitless: dict[tuple, Match] = field(default_factory=dict)
    #: The same, by the structure around the step (:func:`_signature`).
    fruitless_shapes: set[tuple] = field(default_factory=set)
    #: Whether the descent applies a round's single-root steps in one rebuild.
    batch: bool = True
    #: The last step list the descent made, with its graph's key.
    listed: tuple[tuple, list[Step]] | None = None
    skipped: int = 0

    def out_of_budget(self) -> bool:
        if time.perf_counter() > self.deadline:
            self.stopped = "time limit"
            return True
        if self.expanded >= self.budget.max_steps:
            self.stopped = "budget"
            return True
        return False

    def _timed(self, matches: Iterable[Match]) -> Iterable[Match]:
        """``matches`` until the deadline (most are filtered out before a step is priced,
        where the step list checks the time)."""
        for match in matches:
            if time.perf_counter() > self.deadline:
                return
            yield match

    # ------------------------------------------------------------ descent

    def descend(self, graph: Graph, current: float, trace: list[TraceStep]) -> tuple[Graph, float]:
        """Take every step that lowers the cost by itself, in rounds (see the module
        docstring, 1.); appends the steps taken to ``trace``."""
        explorer = self.explorer
        while not self.out_of_budget():
            self.expanded += 1
            self.descents += 1
            slack = TIE_SLACK * abs(current)
            steps = explorer.steps(graph, deadline=self.deadline)
            self.listed = (graph.key, steps)  # the lookahead starts from the last list
            improving = sorted((s for s in steps if s.delta < -slack), key=lambda s: s.delta)
            chosen: list[Step] = []
            used: set[Node] = set()
            for step in improving:
                if step.match.nodes.isdisjoint(used):
                    chosen.append(step)
                    used.update(step.match.nodes)
            position = explorer.context(graph).position
            chosen.sort(key=lambda s: -max(position[n] for n in s.match.nodes))
            # The prices err on the costly side only, so the round is priced exactly once,
            # at its end (pricing every graph is a walk over the whole graph); a round whose
            # steps interfered so that it gained nothing is redone checking each step.
            start, start_cost, mark = graph, current, len(trace)
            # Single-root steps in one rebuild of the graph (applying them one by one costs a
            # rebuild each), the others one by one.
            batch = explorer.apply_all(graph, chosen) if self.batch else None
            rest = chosen
            if batch is not None:
                graph, applied = batch
                for step in applied:
                    trace.append(explorer.trace_step(start, step, current))
                    current += step.delta
                rest = [s for s in chosen if len(s.match.roots) > 1]
            graph, current = self._apply_round(graph, current, rest, trace, exact=False)
            if graph is not start:
                current = self.cost(graph)
                if current >= start_cost - slack:
                    del trace[mark:]
                    graph, current = self._apply_round(start, start_cost, chosen, trace, True)
                else:
                    trace[-1] = replace(trace[-1], cost_after=current)
            if graph is start:
                break
        return graph, current

    def _apply_round(
        self,
        graph: Graph,
        current: float,
        chosen: list[Step],
        trace: list[TraceStep],
        exact: bool,
    ) -> tuple[Graph, float]:
        """Apply ``chosen`` (downstream first) where their nodes are still present; with
        ``exact``, keep only steps that lower the exact cost."""
        explorer = self.explorer
        slack = TIE_SLACK * abs(current)
        for step in chosen:
            if time.perf_counter() > self.deadline:
                break
            present = explorer.context(graph).position
            if not all(n in present for n in step.match.nodes):
                continue  # rebuilt by an earlier step of this round: next round
            child = explorer.apply(graph, step)
            if child is None:
                continue
            after = self.cost(child) if exact else current + step.delta
            if exact and after >= current - slack:
                continue
            trace.append(replace(explorer.trace_step(graph, step, current), cost_after=after))
            graph, current = child, after
        return graph, current

    # ------------------------------------------------------------ lookahead

    def lookahead(self, graph: Graph, g_cost: float) -> _Best | None:
        """One K-step lookahead pass over ``graph`` (module docstring, 2. to 4.): each first
        step, downstream first, opens a subtree of local sequences; the first improvement a
        subtree finds is taken and the pass goes on upstream on the better graph. Returns
        the graph after the pass with the steps taken, or None when nothing improved."""
        self.lookaheads += 1
        explorer, budget = self.explorer, self.budget
        current = with_lineage(graph)
        if self.listed is not None and self.listed[0] == current.key:
            first = list(self.listed[1])  # the descent's last list: nothing changed since
        else:
            self.expanded += 1
            first = explorer.steps(current, deadline=self.deadline)
        position = explorer.context(current).position
        # Downstream first: an improvement rebuilds only what lies below it, so the first
        # steps still ahead of the pass (upstream) stay valid on the better graph.
        first.sort(key=lambda s: -max(position[n] for n in s.match.nodes))
        done = _Best(current, g_cost)
        keys: Keys = {}
        visited: dict[tuple, int] = {}
        for step in first:
            if self.out_of_budget():
                break
            if step.match.key in self.fruitless:
                continue  # nothing below it last time, and its nodes did not change
            ctx = explorer.context(done.graph)
            if not all(n in ctx.position for n in step.match.nodes):
                continue  # rebuilt by an improvement below it: the next pass sees it
            if done.cost + step.delta >= budget.alpha * done.cost:
                continue
            signature = _signature(ctx, step)
            if signature is not None and signature in self.fruitless_shapes:
                self.skipped += 1
                continue  # the same surroundings as a first step that led nowhere
            if not keys:
                keys = {_token(done.graph, n): (-1, i) for i, n in enumerate(ctx.order)}
                self.graphs_seen += len(visited)
                visited = {done.graph.key: 0}
            found = self._subtree(done, step, first, keys, visited)
            if found is not None:
                done = _Best(with_lineage(found.graph), found.cost, done.steps + found.steps)
                keys = {}
            elif not self.out_of_budget():
                self.fruitless[step.match.key] = step.match
                if signature is not None:
                    self.fruitless_shapes.add(signature)
        self.graphs_seen += len(visited)
        return done if done.steps else None

    def _subtree(
        self, root: _Best, first: Step, candidates: list[Step], keys: Keys, visited: dict
    ) -> _Best | None:
        """The local sequences of at most K steps that start with ``first`` on ``root``'s
        graph: the first graph found cheaper than the root, or None."""
        explorer, budget = self.explorer, self.budget
        best = _Best(root.graph, root.cost)

        def children(g, ctx, parent, last, made, inherited, touched, keep) -> list[Step]:
            """Local candidate steps of ``g`` (DP: local matching plus replayed parent steps)
            whose matches pass ``keep`` (checked before pricing them)."""
            if not self.dp:
                local = (
                    m for m in self._timed(explorer.matches(g)) if _local(g, m, touched) and keep(m)
                )
                return explorer.steps(g, matches=local, deadline=self.deadline)
            by_token = {_token(g, n): n for n in ctx.order}
            anchors = set(made)
            replay = []
            for s in inherited:
                if not s.match.nodes.isdisjoint(last.match.nodes):
                    continue
                if not _local(parent, s.match, touched):
                    continue
                if all(n in ctx.position for n in s.match.nodes):
                    replay.append(s.match)
                    continue
                rebuilt = by_token.get(_token(parent, s.match.roots[0].node))
                if rebuilt is not None:
                    anchors.add(rebuilt)  # rebuilt downstream of the last step: match it again
            region = explorer.neighbourhood(g, anchors, LOCAL_DEPTH)
            # A merge's first root may be a sibling of a created node (reads the same input).
            for node in made:
                for v in node.operands:
                    region.update(ctx.consumers.get(v, ()))
            local = (
                m
                for m in self._timed(chain(explorer.matches(g, region), replay))
                if _local(g, m, touched) and keep(m)
            )
            return explorer.steps(g, matches=local, deadline=self.deadline)

        def branch(g, g_cost, keys, depth, steps, candidates, touched, pending, step,
                   new_cost, biggest) -> None:  # fmt: skip
            """Apply ``step`` to ``g`` (at ``depth``) and search below the result."""
            created = explorer.created(g, step)
            child = explorer.apply(g, step)
            if child is None:
                return
            seen_depth = visited.get(child.key)
            if seen_depth is not None and seen_depth <= depth + 1:
                return
            visited[child.key] = depth + 1
            path = steps + (explorer.trace_step(g, step, g_cost),)
            if new_cost < best.cost:
                exact = self.cost(child)
                if exact < best.cost:
                    best.graph, best.cost, best.steps = child, exact, path
                    return  # improved: the pass takes it
                new_cost = exact
            child_keys = dict(keys)
            for i, node in enumerate(created):
                child_keys[_token(child, node)] = (depth, i)
            mine = _touched_by(child, explorer.context(child), created, step.values)
            if step.delta >= 0:
                pending = (*pending, (frozenset(mine), 0))
            others = [s for s in candidates if s is not step]
            visit(child, new_cost, child_keys, g, (step, biggest), depth + 1, path, created,
                  others, (touched or frozenset()) | mine, pending)  # fmt: skip

        def visit(g, g_cost, keys, parent, last, depth, steps, made, inherited, touched,
                  pending) -> None:  # fmt: skip
            """Search below ``g`` until it finds a graph cheaper than the root.
            ``pending``: (tokens, age) of the costlier steps no later step used yet."""
            if depth >= budget.max_depth or self.out_of_budget():
                return
            self.expanded += 1
            ctx = explorer.context(g)

            def keep(match: Match) -> bool:
                # The canonical order of independent steps, and no costlier step left unused
                # for too long (module docstring, 2.): both known before pricing the step.
                return last[1] < _biggest(g, match, keys) and (
                    _unused(g, match, pending) is not None
                )

            candidates = children(g, ctx, parent, last[0], made, inherited, touched, keep)
            ranked = []
            for step in candidates:
                new_cost = g_cost + step.delta
                if new_cost >= budget.alpha * best.cost:
                    continue
                left = _unused(g, step.match, pending)
                if left is None or len(left) + (step.delta >= 0) > MAX_PENDING:
                    continue  # a costlier step left unused: dominated
                ranked.append((new_cost, _biggest(g, step.match, keys), step, left))
            ranked.sort(key=lambda r: (r[0], r[1]))
            leaves = depth + 1 >= budget.max_depth
            for new_cost, biggest, step, left in ranked:
                if self.out_of_budget() or best.cost < root.cost:
                    return  # out of time, or improved: the pass takes it
                if leaves and new_cost >= best.cost:
                    continue  # a last step that cannot improve: not worth building
                branch(g, g_cost, keys, depth, steps, candidates, touched, left, step,
                       new_cost, biggest)  # fmt: skip

        try:
            branch(root.graph, root.cost, keys, 0, (), candidates, None, (), first,
                   root.cost + first.delta, _biggest(root.graph, first.match, keys))  # fmt: skip
        finally:
            # branch and visit call each other: a reference cycle through their cells that
            # holds every graph of the subtree; emptying the cells frees them at once.
            branch = visit = children = None  # type: ignore[assignment]
        return best if best.cost < root.cost else None

    # ------------------------------------------------------------ the whole search

    def run(self, graph: Graph, initial: float) -> tuple[Graph, float, list[TraceStep]]:
        """Descend, look ahead, and again from each better graph, until a lookahead finds
        nothing or the budget runs out."""
        steps: list[TraceStep] = []
        current = initial
        deadline, share = self.deadline, LOOKAHEAD_SHARE * self.budget.time_limit
        descended = spent = 0.0
        while True:
            started = time.perf_counter()
            graph, current = self.descend(graph, current, steps)
            descended += time.perf_counter() - started
            if self.out_of_budget():
                break
            left = min(share, max(LOOKAHEAD_FLOOR, LOOKAHEAD_RATIO * descended) - spent)
            started = time.perf_counter()
            self.deadline = min(deadline, started + max(left, 0.0))
            self.stopped = "fixed point"  # unless this pass runs out of time
            found = self.lookahead(graph, current)
            self.deadline = deadline
            if self.stopped == "time limit" and time.perf_counter() < deadline:
                # The pass's own share ran out, not the search's time: callers may go on.
                self.stopped = "lookahead limit"
            share -= time.perf_counter() - started
            spent += time.perf_counter() - started
            if found is None:
                break  # a K-step lookahead from every step finds nothing better
            graph, current = found.graph, found.cost
            steps.extend(found.steps)
        return graph, current, steps


def _exact(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget, *, dp: bool
) -> tuple[Graph, SearchTrace]:
    start = time.perf_counter()
    search = _Search(
        explorer=Explorer(rules, cost, graph.meta.opset("")), cost=cost, budget=budget,
        deadline=budget.deadline(start), dp=dp,
    )  # fmt: skip
    initial = cost(graph)
    result, after, steps = search.run(with_lineage(graph), initial)
    return result, SearchTrace(
        algorithm="ocggs-dp" if dp else "ocggs-prune",
        cost_before=initial,
        cost_after=after,
        seconds=time.perf_counter() - start,
        explored=search.expanded,
        stopped_by=search.stopped,
        steps=steps,
        extra={"graphs_seen": search.graphs_seen, "max_depth": budget.max_depth,
               "step_lists": search.explorer.graphs_listed, "descents": search.descents,
               "lookaheads": search.lookaheads, "skipped_as_seen": search.skipped},
    )  # fmt: skip


def ocggs_prune(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
) -> tuple[Graph, SearchTrace]:
    """The pruning-based exact search (see the module docstring)."""
    return _exact(graph, rules, cost, budget, dp=False)


def ocggs_dp(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
) -> tuple[Graph, SearchTrace]:
    """Dynamic programming with pruning (see the module docstring)."""
    return _exact(graph, rules, cost, budget, dp=True)


@dataclass(frozen=True)
class _Candidate:
    cost: float
    order: int
    graph: Graph
    steps: tuple[TraceStep, ...]


def ocggs_sample(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
) -> tuple[Graph, SearchTrace]:
    """The sampling heuristic (see the module docstring), from the descent's graph.
    Deterministic (ties broken by discovery order); runs until a level improves on the best
    graph no more, or the time limit, or ``max_steps`` expansions."""
    start = time.perf_counter()
    deadline = budget.deadline(start)
    explorer = Explorer(rules, cost, graph.meta.opset(""))
    initial = cost(graph)
    descent = _Search(explorer=explorer, cost=cost, budget=budget, deadline=deadline, dp=False)
    descended: list[TraceStep] = []
    graph, after = descent.descend(graph, initial, descended)
    best = _Candidate(after, 0, graph, tuple(descended))
    seen = {graph.key}
    counter = iter(range(1, 1 << 62))
    expanded, stopped = descent.expanded, "exhausted"
    half = max(1, budget.sample_size // 2)

    def children(parent: _Candidate) -> list[_Candidate]:
        nonlocal expanded
        expanded += 1
        out = []
        for step in explorer.steps(parent.graph, deadline=deadline):
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
            if time.perf_counter() > deadline:
                break
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
            follow = [s.delta for s in explorer.steps(child.graph, deadline=deadline)]
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
            if time.perf_counter() > deadline:
                stopped = "time limit"
                break  # an exact price is a whole-graph walk: none past the limit
            if cand.cost < best.cost:
                exact = cost(cand.graph)
                if exact < best.cost:
                    best = _Candidate(exact, cand.order, cand.graph, cand.steps)
                    improved = True
        if stopped == "time limit":
            break
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
