"""Equality saturation: grow an e-graph with every rewrite, then extract the cheapest graph.

:func:`eqsat` is the search of the Tensat paper (Yang, Phothilimthana, Wang, Willsey, Roy,
Pienaar, MLSys 2021) over graphopt's IR and rule library, with the
:data:`~optimizer.search.base.SearchFn` signature:

1. the input graph becomes an :class:`~optimizer.search.egraph.EGraph`;
2. each iteration matches every rule (:mod:`~optimizer.search.eqsat_match`) on a consistent
   e-graph, then applies all matches: each builds the rule's rewrite over the classes'
   representatives (:func:`~optimizer.rewrite.apply.replacement`, which refuses type changes;
   new ops must exist at the model's opset, :func:`~optimizer.rewrite.apply.exists_in`) and
   merges it with the matched root's class; then congruence is restored (rebuild) and new
   constant computations are folded on onnxruntime (:mod:`~optimizer.search.eqsat_fold`, so
   ``is_const`` preconditions see the weights that rewrites compute, as the greedy pass's
   folding rounds do);
3. it stops when an iteration adds nothing (``"saturated"``), at ``budget.max_iterations`` or
   ``budget.max_enodes`` (``"budget"``), or at :data:`SATURATION_SHARE` of
   ``budget.time_limit`` (``"time limit"``), leaving the rest of the time to extraction;
4. extraction (:mod:`~optimizer.search.extract`, :mod:`~optimizer.search.extract_egraph`)
   picks one e-node per needed class, minimising the graph's cost with shared nodes counted
   once: ILP on HiGHS over the members that cannot close a cycle (for at most
   :data:`ILP_SHARE` of the time limit), egg's greedy extractor as fallback; when pruning
   dominated members leaves few choices, they are compared one by one instead
   (:func:`~optimizer.search.extract_egraph.solve_few`); the chosen graph is rebuilt as IR
   and checked.

The result is returned only when its cost, ``cost(graph)``, is strictly below the input's;
otherwise the input itself is. Nodes that must stay (random generators, opaque custom ops) are
kept: a rewrite whose result no longer depends on every such node its root depended on is not
applied (as the greedy pass refuses to drop one), and if the cheapest graph still drops one,
extraction is redone with the classes between such nodes and the outputs pinned to their
original nodes; failing that, the input is returned.

Rules that only swap a commutative op's inputs (``x+y = y+x``) are left out: e-matching tries
every input order of commutative ops already. Keeping the e-graph finite: egg's backoff
scheduler (a rule matching more than :data:`MATCH_LIMIT` times in an iteration is banned for a
while, both doubling at each ban); multi-root rules (merging parallel convolutions or matmuls,
batching products that share a weight, which combine without end) run only in the first
:data:`MULTI_ROOT_ITERATIONS` iterations, as Tensat limits its multi-patterns, and each class
is a root of at most one application of a given multi-root rule: an iteration takes, in
e-node order, the matches whose roots no earlier match of the rule took. Pairs merged in one
iteration are merged with each other in the next, so ``k`` products sharing a weight become one
in ``log2(k)`` iterations; matching every pair instead grows quadratically per iteration (on
NasRNN the batching rules were banned by the scheduler after their first iteration, and the
e-graph only held pairs). A multi-root match is also dropped when a class it binds reads one
of its roots (Tensat's cycle filter: on NasRNN, half the batching matches paired a product
with one of a later step, which reads it). A rule is not applied at a node that
:data:`SELF_CHAIN_LIMIT` applications of that same rule in a row produced (a kernel is enlarged
at most twice); folding stops at :data:`FOLD_TOTAL_BYTES`.
After the first iteration a single-root rule is only matched at e-nodes with a change within
its pattern's depth below them (incremental e-matching).

Trace: ``steps`` lists, in order of application, the rule applications the extracted graph
still shows: one created an e-node the graph uses, or its result provides a class the graph
needs, or it created an e-node that such an application matched (an enabling step, such as
enlarging a kernel so that two convolutions merge). Their costs are cumulative attributions:
each step adds the cost of the graph's nodes that it created and subtracts the cost of the
input's nodes the graph no longer computes that it was the first to match (nodes no surviving
step matched are charged to the last step), so the first step starts at the input's cost and
the last step ends at the result's cost.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from optimizer.cost import CostModel
from optimizer.ir import Graph, IRCheckError, Node, Value
from optimizer.passes.rewrite import is_commutation
from optimizer.rewrite.apply import exists_in, replacement
from optimizer.rewrite.match import Match, MatchIndex, context
from optimizer.rewrite.rule import Op, Rule
from optimizer.search.base import Budget, SearchTrace, TraceStep
from optimizer.search.egraph import ORIGINAL, EGraph
from optimizer.search.eqsat_fold import FOLD_TOTAL_BYTES, ConstantFolder
from optimizer.search.eqsat_match import EMatch, EMatcher, pattern_depth, pattern_ops
from optimizer.search.extract import Extraction, ExtractionError
from optimizer.search.extract_egraph import materialize, problem_from_egraph, solve_few

__all__ = [
    "FOLD_TOTAL_BYTES",
    "ILP_SHARE",
    "MATCH_LIMIT",
    "MULTI_ROOT_ITERATIONS",
    "SATURATION_SHARE",
    "SELF_CHAIN_LIMIT",
    "Application",
    "Saturation",
    "eqsat",
]

#: Share of ``budget.time_limit`` that saturation may use; extraction gets the rest.
SATURATION_SHARE = 0.6
#: Share of ``budget.time_limit`` the extraction ILP may use at most. HiGHS finds its best
#: solution early and then spends long proving it optimal (NasRNN's e-graph: the optimum
#: at 1.5 s, the proof at 9.5 s); a search that waited for the proof would be slower than
#: the time it has to beat.
ILP_SHARE = 0.3
#: egg's backoff scheduler: matches per rule per iteration before a ban, and the ban's length
#: in iterations (both double with each ban of the rule).
MATCH_LIMIT = 1000
BAN_LENGTH = 5
#: Iterations in which multi-root rules run (Tensat's k_multi).
MULTI_ROOT_ITERATIONS = 3
#: Applications of one rule in a row that may lead to a node the rule then rewrites again.
SELF_CHAIN_LIMIT = 2
#: Rules that only enable merges with a sibling convolution (TASO's kernel enlargement: a
#: bigger kernel costs more on its own). They are applied only to a Conv whose input another
#: Conv outside its e-class also reads: on ResNet-50 every conv was enlarged three times over,
#: 110 of the search's 112 applications, for merges that have no partner.
SIBLING_ENABLING_RULES = frozenset({"conv-enlarge-kernel", "conv-bias-enlarge-kernel"})


@dataclass
class Application:
    """One rule application: the rule, the IR nodes it matched, the root classes, the e-nodes
    of its results, the e-nodes it created, and the iteration."""

    rule: str
    matched: tuple[Node, ...]
    matched_enodes: tuple[int, ...]
    roots: tuple[int, ...]
    results: tuple[int, ...]
    created: tuple[int, ...]
    iteration: int


@dataclass
class _RuleStats:
    banned_until: int = -1
    times_banned: int = 0


@dataclass
class _Backoff:
    """egg's ``BackoffScheduler``: a rule with too many matches in one iteration is skipped
    for a number of iterations; each ban doubles its threshold and its next ban's length."""

    match_limit: int = MATCH_LIMIT
    ban_length: int = BAN_LENGTH
    stats: dict[str, _RuleStats] = field(default_factory=dict)

    def _of(self, rule: str) -> _RuleStats:
        return self.stats.setdefault(rule, _RuleStats())

    def banned(self, rule: str, iteration: int) -> bool:
        return iteration < self._of(rule).banned_until

    def limit(self, rule: str) -> int:
        return self.match_limit << self._of(rule).times_banned

    def ban(self, rule: str, iteration: int) -> None:
        stats = self._of(rule)
        stats.banned_until = iteration + (self.ban_length << stats.times_banned)
        stats.times_banned += 1

    def any_banned(self, iteration: int) -> bool:
        return any(iteration < s.banned_until for s in self.stats.values())

    def unban_all(self) -> None:
        for s in self.stats.values():
            s.banned_until = -1


class Saturation:
    """The e-graph of one search and the loop that saturates it (see the module docstring)."""

    def __init__(self, graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget) -> None:
        self.graph = graph
        self.cost = cost
        self.budget = budget
        self.meta = graph.meta
        self.opset = graph.meta.opset("")
        self.eg = EGraph()
        self.roots = self.eg.add_graph(graph)
        #: A part of the graph the matches must lie in (partitioned search's ``RegionIndex``);
        #: nodes that rewrites create belong to it too.
        self.region: set[Node] | None = getattr(rules, "region", None)
        self.rules: list[Rule] = [
            r
            for r in rules.rules
            if r.match and isinstance(r.match[0], Op) and not is_commutation(r)
        ]
        self.folder = ConstantFolder(self.eg, self.meta)
        # Not a bound method: the matchers would then hold the saturation that holds them, and
        # the whole e-graph would wait for the cyclic collector instead of being freed at once.
        opset_of = functools.partial(_opset_of, self.opset, self.meta)
        self.matchers = {r.name: EMatcher(self.eg, r, opset_of, self.folder) for r in self.rules}
        self.depth = {r.name: pattern_depth(r) for r in self.rules}
        self.ops = {r.name: pattern_ops(r) for r in self.rules}
        self.apps: list[Application] = []
        self.scheduler = _Backoff()
        self.iterations = 0
        self.matches_found = 0
        self._applied: set[tuple] = set()
        self._synced: dict[str, int] = {}  # rule -> iteration whose search may be incremental
        #: Classes each multi-root rule has already used as roots (module docstring).
        self._used: dict[str, set[int]] = {}
        self._above_cache: dict[int, set[int]] = {}
        self._names = {n: m.name for n, m in graph.node_meta.items() if m.name}
        self._needs = self._init_needs()

    # ------------------------------------------------------------------ the loop

    def run(self, deadline: float) -> str:
        """Saturate until ``deadline`` (perf_counter) or a budget; returns why it stopped."""
        eg, budget = self.eg, self.budget
        self.folder.run(deadline)
        changes = eg.take_changes()
        for it in itertools.count():
            if it >= budget.max_iterations:
                return "budget"
            if time.perf_counter() >= deadline:
                return "time limit"
            if eg.num_enodes >= budget.max_enodes:
                return "budget"
            dist = self._dirty(*changes) if it > 0 else {}
            matches, complete = self._search(it, dist, deadline)
            self.matches_found += len(matches)
            self.iterations += 1
            stop = self._apply(matches, it, deadline)
            eg.rebuild()
            if stop is None:
                self.folder.run(deadline)
            changes = eg.take_changes()
            if stop is not None:
                return stop
            if not complete:
                return "time limit"
            if not changes[0] and not changes[1]:
                if not self.scheduler.any_banned(it + 1):
                    return "saturated"
                self.scheduler.unban_all()  # as egg: retry the banned rules before stopping
        raise AssertionError("unreachable")

    def _dirty(self, changed: set[int], new: list[int]) -> dict[int, int]:
        """For each e-node with a change below it: how many levels down the nearest change is
        (0 for new e-nodes; 1 when a class it reads changed ...), up to the deepest pattern."""
        eg = self.eg
        dist = {e: 0 for e in new}
        frontier = set(changed)
        for level in range(1, max(self.depth.values(), default=0) + 1):
            nxt: set[int] = set()
            for c in sorted(frontier):
                for p in eg.parents(c):
                    if p not in dist:
                        dist[p] = level
                        nxt.update(eg.find(o) for o in eg.enodes[p].outs)
            frontier = nxt
            if not frontier:
                break
        return dist

    def _search(self, it: int, dist: dict[int, int], deadline: float) -> tuple[list, bool]:
        """Matches of every rule allowed in iteration ``it`` (read phase: the e-graph does not
        change); False as second value when the deadline cut the search short."""
        eg = self.eg
        found: list[EMatch] = []
        for matcher in self.matchers.values():
            matcher.forget()
        self._above_cache.clear()
        dirty: dict[tuple[str, str], list[int]] = {}  # e-nodes with a change below, by op
        for e in sorted(dist):
            node = eg.enodes[e].node
            dirty.setdefault((_norm(node.domain), node.op), []).append(e)
        for rule in self.rules:
            if time.perf_counter() >= deadline:
                return found, False
            multi = len(rule.match) > 1
            if multi and it >= MULTI_ROOT_ITERATIONS:
                continue
            if self.scheduler.banned(rule.name, it):
                continue
            if not all(eg.has_op(domain, op) for domain, op in self.ops[rule.name]):
                self._synced[rule.name] = it + 1  # no match anywhere: none was missed
                continue
            first = rule.match[0]
            if not multi and it > 0 and self._synced.get(rule.name) == it:
                depth = self.depth[rule.name]
                roots = [
                    e
                    for e in dirty.get((_norm(first.domain), first.op), ())
                    if eg.enodes[e].alive and dist[e] <= depth
                ]
            else:
                roots = eg.by_op(first.domain, first.op)
            limit = self.scheduler.limit(rule.name)
            if multi:
                found_here = self._multi_matches(rule, roots, deadline)
            else:
                found_here = self.matchers[rule.name].matches(roots, deadline)
            if self.region is not None and not multi:
                found_here = (m for m in found_here if all(map(self._in_region, m.enodes)))
            matches = list(itertools.islice(found_here, limit + 1))
            if time.perf_counter() >= deadline:  # possibly cut short: apply what was found
                found.extend(matches)
                return found, False
            if len(matches) > limit:
                self.scheduler.ban(rule.name, it)
                continue
            self._synced[rule.name] = it + 1
            found.extend(matches)
        return found, True

    def _multi_matches(self, rule: Rule, roots: list[int], deadline: float) -> Iterator[EMatch]:
        """Matches of a multi-root rule whose roots are disjoint from those of every other
        match it yields and of every earlier application of the rule, and that close no
        cycle (module docstring)."""
        eg = self.eg
        used = self._used.setdefault(rule.name, set())
        used_now = {eg.find(c) for c in used}
        used.clear()
        used.update(used_now)
        taken = set(used_now)
        for m in self.matchers[rule.name].matches(roots, deadline, taken):
            if self._closes_cycle(m):
                continue
            if self.region is not None and not all(map(self._in_region, m.enodes)):
                continue  # filtered before its roots are taken, so they stay free
            taken.update(m.roots)
            yield m

    def _closes_cycle(self, m: EMatch) -> bool:
        """Whether a class the match binds reads one of its roots: the rewrite would then
        compute a root from itself, and extraction could never use it (Tensat's filter)."""
        eg = self.eg
        bound = {eg.find(c) for c in m.tensors.values()}
        return any(not bound.isdisjoint(self._above(r)) for r in m.roots)

    def _above(self, c: int) -> set[int]:
        """Class ``c`` and every class that reads it, transitively (cached per iteration)."""
        c = self.eg.find(c)
        found = self._above_cache.get(c)
        if found is None:
            eg = self.eg
            found = {c}
            stack = [c]
            while stack:
                for p in eg.parents(stack.pop()):
                    for o in eg.enodes[p].outs:
                        o = eg.find(o)
                        if o not in found:
                            found.add(o)
                            stack.append(o)
            self._above_cache[c] = found
        return found

    def _in_region(self, e: int) -> bool:
        enode = self.eg.enodes[e]
        return enode.origin != ORIGINAL or enode.node in self.region  # type: ignore[operator]

    def _apply(self, matches: list[EMatch], it: int, deadline: float) -> str | None:
        """Apply ``matches`` (write phase); returns why it stopped early, if it did."""
        eg, budget = self.eg, self.budget
        for k, m in enumerate(matches):
            if k % 32 == 0 and time.perf_counter() >= deadline:
                return "time limit"
            if eg.num_enodes >= budget.max_enodes:
                return "budget"
            key = m.key(eg)
            if key in self._applied:
                continue
            self._applied.add(key)
            self._apply_one(m, it)
        return None

    def _has_sibling_conv(self, m: EMatch) -> bool:
        """Whether the data input of the Conv at ``m``'s root is also read by a Conv e-node of
        another e-class (a merge partner for an enlarged kernel)."""
        eg = self.eg
        root_class = eg.find(m.roots[0])
        conv = eg.enodes[eg.live(m.enodes[0])]
        if not conv.kids or conv.kids[0] is None:
            return False
        for p in eg.parents(eg.find(conv.kids[0])):
            reader = eg.enodes[p]
            if not reader.alive or reader.node.op != "Conv" or not reader.outs:
                continue
            if eg.find(reader.outs[0]) != root_class:
                return True
        return False

    def _apply_one(self, m: EMatch, it: int) -> None:
        eg = self.eg
        rule = m.rule
        root = eg.enodes[eg.live(m.enodes[0])]
        chain = root.chain if root.origin >= 0 and self.apps[root.origin].rule == rule.name else 0
        if chain >= SELF_CHAIN_LIMIT:
            return
        if rule.name in SIBLING_ENABLING_RULES and not self._has_sibling_conv(m):
            return
        matcher = self.matchers[rule.name]
        nodes = matcher.nodes(m)
        match = Match(
            rule,
            matcher.tensor_values(m),
            m.attrs,
            tuple(eg.rep(c) for c in m.roots),
            nodes,
        )
        values = replacement(match, opset=self.opset)
        if values is None:
            return
        fresh = _fresh_nodes(eg, values)
        if not all(exists_in(node, self.meta) for node in fresh):
            return
        if self._needs and not self._keeps_needs(m.roots, values):
            return
        app = len(self.apps)
        first_new = len(eg.enodes)
        unions = eg.unions
        root_needs = [self._need(r) for r in m.roots] if self._needs else []
        classes = [eg.add(v, origin=app) for v in values]
        for r, c in zip(m.roots, classes, strict=True):
            eg.union(r, c)
        if len(m.roots) > 1:
            self._used.setdefault(rule.name, set()).update(m.roots)
        created = tuple(range(first_new, len(eg.enodes)))
        if self._needs:  # a merged class needs what its root did (the rewrite may need more)
            for r, need in zip(m.roots, root_needs, strict=True):
                self._needs[eg.find(r)] = need
            for e in created:
                dep = frozenset().union(
                    *(self._need(k) for k in eg.enodes[e].kids if k is not None)
                )
                for o in eg.enodes[e].outs:
                    self._needs.setdefault(eg.find(o), dep)
        if not created and eg.unions == unions:
            return  # nothing new: the rewrite was already known
        results = tuple(eg.enode_of(v.node) for v in values)
        for e in results:
            if e is not None and e >= first_new:
                eg.enodes[e].chain = chain + 1
        matched = tuple(sorted(nodes, key=lambda n: n.serial))
        self.apps.append(
            Application(rule.name, matched, m.enodes, m.roots, results, created, it)  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ nodes that must stay

    def _init_needs(self) -> dict[int, frozenset[int]]:
        """For each class of the input graph, the protected e-nodes its value depends on
        (empty when the graph has none, which turns the whole analysis off)."""
        ctx = context(self.graph)
        if not ctx.protected:
            return {}
        eg = self.eg
        needs: dict[int, frozenset[int]] = {}
        for node in ctx.order:
            dep = frozenset().union(
                *(needs.get(eg.class_of(v), frozenset()) for v in node.operands)
            )
            if node.unique is not None:
                dep |= {eg.enode_of(node)}
            for v in node.outputs:
                c = eg.class_of(v)
                needs[c] = needs.get(c, frozenset()) | dep
        return needs

    def _need(self, c: int) -> frozenset[int]:
        return self._needs.get(self.eg.find(c), frozenset())

    def _keeps_needs(self, roots: tuple[int, ...], values: list[Value]) -> bool:
        """Whether each new value still depends on every protected node its root depended on
        (as the greedy pass refuses rewrites that drop such a node)."""
        memo: dict[Value, frozenset[int]] = {}

        def dep(value: Value) -> frozenset[int]:
            found = memo.get(value)
            if found is None:
                c = self.eg.class_of(value)
                if c is not None:
                    found = self._need(c)
                else:
                    found = frozenset().union(*(dep(v) for v in value.node.operands))
                memo[value] = found
            return found

        return all(self._need(r) <= dep(v) for r, v in zip(roots, values, strict=True))

    # ------------------------------------------------------------------ extraction

    def extract(self, deadline: float) -> tuple[Graph, Extraction, dict[Node, int]]:
        """The cheapest graph the e-graph holds for the input's outputs (raises
        :class:`ExtractionError` or :class:`IRCheckError` when it cannot be built)."""
        eg = self.eg
        ep = problem_from_egraph(eg, self.roots, self.cost)
        ext = solve_few(ep.problem, self._ilp_time(deadline))
        choice = ep.egraph_choice(ext.choice)
        provenance = [a.rule for a in self.apps]
        graph, came_from = materialize(eg, choice, self.graph, provenance)
        protected = context(self.graph).protected
        if protected and not self._keeps(protected, came_from):
            ep = problem_from_egraph(eg, self.roots, self.cost, pins=self._protected_pins())
            ext = solve_few(ep.problem, self._ilp_time(deadline))
            choice = ep.egraph_choice(ext.choice)
            graph, came_from = materialize(eg, choice, self.graph, provenance)
            if not self._keeps(protected, came_from):
                raise ExtractionError("the extracted graph drops a node that must stay")
        graph.check()
        self.choice = choice
        return graph, ext, came_from

    def _ilp_time(self, deadline: float) -> float:
        """Seconds the ILP may take: what :func:`_ilp_time` leaves, at most
        :data:`ILP_SHARE` of the time limit."""
        return min(_ilp_time(deadline), ILP_SHARE * self.budget.time_limit)

    def _keeps(self, protected: list[Node], came_from: dict[Node, int]) -> bool:
        used = set(came_from.values())
        return all(self.eg.enode_of(n) in used for n in protected)

    def _protected_pins(self) -> dict[int, int]:
        """Classes of the protected nodes and of every input node downstream of one, pinned to
        that original node (the first in topological order when several share a class)."""
        ctx = context(self.graph)
        downstream: set[Node] = set(ctx.protected)
        pins: dict[int, int] = {}
        for node in ctx.order:
            if node in downstream or any(v.node in downstream for v in node.operands):
                downstream.add(node)
                e = self.eg.enode_of(node)
                for v in node.outputs:
                    c = self.eg.class_of(v)
                    if c is not None and e is not None:
                        pins.setdefault(c, e)
        return pins

    # ------------------------------------------------------------------ trace

    def steps(self, result: Graph, came_from: dict[Node, int], before: float) -> list[TraceStep]:
        """The surviving applications with cumulative costs (module docstring)."""
        eg, cost = self.eg, self.cost
        used = set(came_from.values())
        alive = {
            k
            for k, app in enumerate(self.apps)
            if any(eg.live(e) in used for e in app.created)
            or any(
                e is not None and self.choice.get(eg.find(r)) == eg.live(e)
                for r, e in zip(app.roots, app.results, strict=True)
            )
        }
        work = sorted(alive)
        while work:  # the applications that created what a surviving one matched survive too
            for e in self.apps[work.pop()].matched_enodes:
                origin = eg.enodes[e].origin
                if origin >= 0 and origin not in alive:
                    alive.add(origin)
                    work.append(origin)
        survivors = sorted(alive)
        if not survivors:
            return []
        order = result.nodes()
        free = cost.free_nodes(order)
        added = dict.fromkeys(survivors, 0.0)
        for node in order:
            origin = eg.enodes[came_from[node]].origin
            if origin in added and node not in free:
                added[origin] += cost.node_cost(node)
        removed = dict.fromkeys(survivors, 0.0)
        in_order = context(self.graph).order
        in_free = cost.free_nodes(in_order)
        matched_by: dict[Node, int] = {}
        for k in survivors:
            for node in self.apps[k].matched:
                matched_by.setdefault(node, k)
        for node in in_order:
            if eg.enode_of(node) in used or node in in_free:
                continue
            removed[matched_by.get(node, survivors[-1])] += cost.node_cost(node)
        steps = []
        current = before
        for k in survivors:
            app = self.apps[k]
            after = current + added[k] - removed[k]
            steps.append(TraceStep(app.rule, self._describe(app.matched), current, after))
            current = after
        final = cost(result)
        last = steps[-1]
        steps[-1] = TraceStep(last.rule, last.nodes_matched, last.cost_before, final)
        return steps

    def _describe(self, nodes: tuple[Node, ...]) -> list[str]:
        return [self._names.get(n) or f"{n.op}#{n.serial}" for n in nodes]


def _opset_of(opset: int | None, meta, domain: str) -> int | None:
    return opset if domain in ("", "ai.onnx") else meta.opset(domain)


def _norm(domain: str) -> str:
    """ONNX's default domain has two spellings; the e-graph treats them as one."""
    return "" if domain in ("", "ai.onnx") else domain


def _ilp_time(deadline: float) -> float:
    """Seconds extraction may take: most of what is left, the rest kept for rebuilding and
    checking the graph (none when too little is left)."""
    left = deadline - time.perf_counter()
    return 0.0 if left < 0.05 else 0.75 * left - 0.05  # HiGHS may overrun its limit a little


def _fresh_nodes(eg: EGraph, values: list[Value]) -> list[Node]:
    """Non-source nodes that ``values`` reach and the e-graph lacks."""
    found: list[Node] = []
    seen: set[Node] = set()
    stack = [v.node for v in values]
    while stack:
        node = stack.pop()
        if node in seen or node.is_source or eg.contains(node):
            continue
        seen.add(node)
        found.append(node)
        stack.extend(v.node for v in node.operands)
    return found


def eqsat(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
) -> tuple[Graph, SearchTrace]:
    """Equality saturation over ``rules`` with extraction by ILP (see the module docstring).

    Returns the cheapest extracted graph when it is strictly cheaper than ``graph`` under
    ``cost``, else ``graph`` itself, and a :class:`SearchTrace` whose ``explored`` counts
    e-nodes and whose ``extra`` holds ``iterations``, ``eclasses``, ``enodes``,
    ``applications``, ``folded``, ``extraction`` ("ilp", "greedy", or "forced" and
    "exhaustive" where few choices remained, see
    :func:`~optimizer.search.extract_egraph.solve_few`), ``ilp_status``,
    ``ilp_seconds``, ``saturation_seconds``, ``extraction_seconds`` and, when the input was
    kept, ``kept_input`` with the reason.

    Deterministic: e-node ids follow the order of insertion, rules and matches are visited in
    a fixed order, and HiGHS is deterministic; only a time limit that cuts saturation or the
    ILP short makes the result depend on the machine's speed.
    """
    return _eqsat(graph, rules, cost, budget)


def _eqsat(
    graph: Graph, rules: MatchIndex, cost: CostModel, budget: Budget
) -> tuple[Graph, SearchTrace]:
    start = time.perf_counter()
    deadline = budget.deadline(start)
    before = cost(graph)
    sat = Saturation(graph, rules, cost, budget)
    stopped = sat.run(start + SATURATION_SHARE * budget.time_limit)
    sat_seconds = time.perf_counter() - start
    extra: dict = {
        "iterations": sat.iterations,
        "eclasses": sat.eg.num_classes,
        "enodes": sat.eg.num_enodes,
        "applications": len(sat.apps),
        "matches": sat.matches_found,
        "folded": sat.folder.folded,
        "saturation_seconds": sat_seconds,
    }
    result, steps, after = graph, [], before
    try:
        extracted, ext, came_from = sat.extract(deadline)
    except (ExtractionError, IRCheckError) as exc:
        extra["kept_input"] = f"extraction failed: {exc}"
    else:
        extra.update(
            extraction=ext.method,
            ilp_status=ext.ilp_status,
            ilp_seconds=ext.ilp_seconds,
            extraction_cost=ext.cost,
        )
        candidate = cost(extracted)
        if candidate < before:
            result, after = extracted, candidate
            steps = sat.steps(extracted, came_from, before)
        else:
            extra["kept_input"] = "extraction is not cheaper than the input"
    seconds = time.perf_counter() - start
    extra["extraction_seconds"] = seconds - sat_seconds
    trace = SearchTrace(
        algorithm="eqsat",
        cost_before=before,
        cost_after=after,
        seconds=seconds,
        explored=sat.eg.num_enodes,
        stopped_by=stopped,
        steps=steps,
        extra=extra,
    )
    return result, trace
