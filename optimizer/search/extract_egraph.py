"""Extraction from an :class:`~optimizer.search.egraph.EGraph`: pricing it as an
:class:`~optimizer.search.extract.ExtractionProblem`, and rebuilding the chosen graph as IR.

:func:`problem_from_egraph` reduces the e-graph to the classes the outputs need, prices each
e-node with a node-additive cost model (constant-computable ones are free, as the cost model
says) and drops members that can never be chosen; :func:`materialize` turns a choice (class ->
e-node) into a :class:`~optimizer.ir.Graph` with the input's names and metadata.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from optimizer.cost import CostModel
from optimizer.ir import Graph, Node, NodeMeta, Value
from optimizer.ir.graph import rename_after
from optimizer.search.egraph import ORIGINAL, EGraph
from optimizer.search.extract import (
    Extraction,
    ExtractionError,
    ExtractionProblem,
    dag_cost,
    needed,
    prefer_original,
    prune_dominated,
    solve,
)

__all__ = ["EXHAUSTIVE_CHOICES", "EGraphProblem", "materialize", "problem_from_egraph", "solve_few"]

#: Most combinations of members that :func:`solve_few` tries one by one instead of the ILP.
EXHAUSTIVE_CHOICES = 16


@dataclass
class EGraphProblem:
    """An :class:`ExtractionProblem` of an e-graph, with the e-graph ids of its local ids."""

    problem: ExtractionProblem
    classes: list[int]  # local class -> canonical e-class id
    enodes: list[int]  # local e-node -> e-node id
    eg: EGraph | None = None
    #: Constant-computable class -> the e-node that provides it (a leaf of the problem).
    providers: dict[int, int] = field(default_factory=dict)

    def egraph_choice(self, choice: Mapping[int, int]) -> dict[int, int]:
        """A local choice as e-class -> e-node, with the providers of the constant-computable
        classes the chosen e-nodes read, down to the constants."""
        found = {self.classes[c]: self.enodes[n] for c, n in choice.items()}
        if self.eg is None or not self.providers:
            return found
        todo = list(found.values())
        while todo:
            for k in self.eg.kid_classes(todo.pop()):
                if k is not None and k not in found and k in self.providers:
                    found[k] = self.providers[k]
                    todo.append(found[k])
        return found


def problem_from_egraph(
    eg: EGraph,
    roots: Sequence[int],
    cost: CostModel,
    pins: Mapping[int, int] | None = None,
) -> EGraphProblem:
    """The extraction problem of ``eg`` for the classes ``roots``, priced by ``cost``.

    Constant-computable classes (a constant member, or a member that ``cost.free_nodes``
    calls free over constant-computable inputs) are leaves of the problem: one member, their
    constant or else a free member over classes found computable before them (so the
    providers never form a cycle), at no cost and reading nothing, since whatever they read
    is free and always available; :meth:`EGraphProblem.egraph_choice` adds the providers
    below the chosen e-nodes back. The graph's cost then equals the sum of the chosen
    e-nodes' costs, and a member that reads computed classes where another reads constants
    is seen as reading the same (a kernel padded by a rewrite, unfolded, counts as the
    constant it computes when dominated members are pruned). Members that read their own
    class can never be chosen and are dropped. ``pins`` fix some classes' provider.
    """
    pins = {eg.find(c): e for c, e in (pins or {}).items()}
    every = eg.reachable(roots)
    members = {c: eg.members(c) for c in every}
    free_memo: dict[int, bool] = {}

    def model_free(e: int) -> bool:
        found = free_memo.get(e)
        if found is None:
            node = eg.enodes[e].node
            found = node in cost.free_nodes([node], {v.node for v in node.operands})
            free_memo[e] = found
        return found

    kids = {e: eg.kid_classes(e) for c in every for e in members[c]}
    providers: dict[int, int] = {}  # constant-computable class -> its provider
    for c in every:
        const = eg.klass(c).const
        if const is not None:
            providers[c] = eg.enode_of(const.node)  # type: ignore[assignment]

    def free_over(e: int) -> bool:
        ks = [k for k in kids[e] if k is not None]
        return bool(ks) and all(k in providers for k in ks) and model_free(e)

    changed = True
    while changed:  # constant-computable classes, to a fixed point
        changed = False
        for c in reversed(every):
            if c not in providers:
                e = next((e for e in members[c] if free_over(e)), None)
                if e is not None:
                    providers[c] = e
                    changed = True

    allowed: dict[int, list[int]] = {}
    leaves: set[int] = set()  # providers of computable classes: no cost, no kids
    for c in every:
        if c in pins:
            options = [eg.live(pins[c])]
        elif c in providers:
            options = [providers[c]]
            leaves.add(providers[c])
        else:
            options = members[c]
        allowed[c] = [e for e in options if c not in kids.setdefault(e, eg.kid_classes(e))]

    def kids_in_problem(e: int) -> tuple[int | None, ...]:
        return () if e in leaves else kids[e]

    classes: list[int] = []  # the classes the roots reach through the allowed members
    seen: set[int] = set()
    stack = [eg.find(r) for r in roots]
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        classes.append(c)
        stack.extend(
            k for e in allowed[c] for k in kids_in_problem(e) if k is not None and k not in seen
        )
    local_class = {c: i for i, c in enumerate(classes)}
    enodes = sorted({e for c in classes for e in allowed[c]})
    local_enode = {e: i for i, e in enumerate(enodes)}
    costs = []
    for e in enodes:
        node = eg.enodes[e].node
        free = node.is_source or e in leaves or free_over(e)
        costs.append(0.0 if free else float(cost.node_cost(node)))
    problem = ExtractionProblem(
        costs=costs,
        kids=[
            tuple(dict.fromkeys(local_class[k] for k in kids_in_problem(e) if k is not None))
            for e in enodes
        ],
        members=[[local_enode[e] for e in allowed[c]] for c in classes],
        roots=[local_class[eg.find(r)] for r in roots],
        pinned={  # a pin on a member that reads its own class is left out: it cannot hold
            local_class[c]: local_enode[eg.live(e)]
            for c, e in pins.items()
            if c in local_class and eg.live(e) in local_enode
        },
        original=frozenset(local_enode[e] for e in enodes if eg.enodes[e].origin == ORIGINAL),
    )
    return EGraphProblem(problem, classes, enodes, eg, providers)


def solve_few(problem: ExtractionProblem, time_limit: float) -> Extraction:
    """:func:`~optimizer.search.extract.solve`, except where few choices remain once dominated
    members are pruned: then the optimum is found without the ILP, whose three HiGHS runs
    took most of the search's time on graphs with nothing to gain (ResNet-50: 31 of 45 ms).

    With no class left with two or more members the choice is forced (method ``"forced"``);
    with at most :data:`EXHAUSTIVE_CHOICES` combinations of the members of such classes, each
    is priced by its DAG cost and the cheapest acyclic one wins, the first on ties (method
    ``"exhaustive"``). Both are exact, as the ILP is; the input's own members then win ties
    (:func:`~optimizer.search.extract.prefer_original`), as after the ILP."""
    start = time.perf_counter()
    pruned = prune_dominated(problem)
    seen: set[int] = set()
    stack = list(pruned.roots)
    while stack:  # the classes the roots reach through any member
        c = stack.pop()
        if c not in seen:
            seen.add(c)
            stack.extend(k for n in pruned.members[c] for k in pruned.kids[n] if k not in seen)
    options = {c: [pruned.pinned[c]] if c in pruned.pinned else pruned.members[c] for c in seen}
    open_classes = sorted(c for c in seen if len(options[c]) > 1)
    combinations = math.prod(len(options[c]) for c in open_classes)
    if combinations > EXHAUSTIVE_CHOICES:
        return solve(problem, time_limit)
    base = {c: options[c][0] for c in seen if options[c]}
    best, best_cost = None, math.inf
    for combo in itertools.product(*(options[c] for c in open_classes)):
        choice = {**base, **dict(zip(open_classes, combo, strict=True))}
        try:
            cost = dag_cost(pruned, choice)
        except ExtractionError:  # cyclic, or a class without members
            continue
        if cost < best_cost:
            best, best_cost = choice, cost
    if best is None:
        return solve(problem, time_limit)
    choice = prefer_original(problem, {c: best[c] for c in needed(pruned, best)})
    method = "exhaustive" if open_classes else "forced"
    return Extraction(
        choice,
        dag_cost(problem, choice),
        method,
        f"not needed: {combinations} choice{'s' if combinations > 1 else ''} compared",
        0.0,
        time.perf_counter() - start,
    )


def materialize(
    eg: EGraph, choice: Mapping[int, int], graph: Graph, provenance: Sequence[str]
) -> tuple[Graph, dict[Node, int]]:
    """The graph ``choice`` (e-class -> e-node) extracts from ``eg`` for ``graph``'s outputs.

    Inputs, output names and model metadata come from ``graph``; value names follow the
    original values to the values that now compute them; original nodes keep their metadata
    and nodes a rule created carry its name (``provenance[origin]``) as provenance. An e-node
    rebuilt over the same inputs is the original node object (unique nodes stay themselves).
    Returns the graph and, for each of its nodes, the e-node it came from.
    """
    values: dict[int, Value] = {}
    built: dict[int, Node] = {}
    came_from: dict[Node, int] = {}
    meta: dict[Node, NodeMeta] = dict(graph.node_meta)
    roots = [eg.class_of(v) for v in graph.outputs]
    state: dict[int, int] = {}
    for root in roots:
        stack = [(root, False)]
        while stack:
            c, done = stack.pop()
            e = choice.get(c)
            if e is None:
                raise ExtractionError(f"class {c} is needed but has no choice")
            kids = eg.kid_classes(e)
            if not done:
                mark = state.get(c)
                if mark == 2:
                    continue
                if mark == 1:
                    raise ExtractionError(f"the choice is cyclic through class {c}")
                state[c] = 1
                stack.append((c, True))
                stack.extend((k, False) for k in kids if k is not None and state.get(k) != 2)
                continue
            state[c] = 2
            node = built.get(e)
            if node is None:
                node = built[e] = _rebuild(eg, e, kids, values)
                came_from[node] = e
                origin = eg.enodes[e].origin
                if node is not eg.enodes[e].node and node not in meta:
                    if origin == ORIGINAL and eg.enodes[e].node in graph.node_meta:
                        meta[node] = graph.node_meta[eg.enodes[e].node]
                    elif 0 <= origin < len(provenance):
                        meta[node] = NodeMeta(provenance=provenance[origin])
            values[c] = node.outputs[eg.outputs_in(e, c)[0]]
    mapping: dict[Value, Value] = {}
    for node in graph.nodes(include_sources=True):
        for v in node.outputs:
            c = eg.class_of(v)
            if c is not None and c in values:
                mapping[v] = values[c]
    result = rename_after(graph, mapping, meta)
    return result, came_from


def _rebuild(eg: EGraph, e: int, kids: tuple, values: Mapping[int, Value]) -> Node:
    """E-node ``e`` as an IR node over the values chosen for the classes it reads."""
    node = eg.enodes[e].node
    if node.is_source:
        return node
    n_in = len(node.inputs)
    inputs = [None if k is None else values[k] for k in kids[:n_in]]
    captures = {name: values[k] for (name, _), k in zip(node.captures, kids[n_in:], strict=True)}
    same = all(a is b for a, b in zip(inputs, node.inputs, strict=True)) and all(
        captures[name] is v for name, v in node.captures
    )
    return node if same else node.with_inputs(inputs, captures)
