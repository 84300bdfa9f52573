"""Greedy application of the rule library: the ``apply-rules`` pass.

:func:`apply_rules` repeatedly applies the first match (in
:class:`~optimizer.rewrite.match.MatchIndex` order: by node in topological
order, then by rule) whose application strictly lowers the cost, until no
match does (or a step/time budget runs out), folding constants between
rounds so that rules whose preconditions need constants (``is_const``) see
the weights earlier rewrites computed.

The default cost is :class:`AnalyticCost`, a stand-in until the cost-model
work replaces it: per node FLOPs (or output elements when unknown) plus a
per-kernel launch overhead plus the bytes it writes; nodes computable from
constants alone are free, since constant folding removes them. Its sum over
nodes lets a candidate be priced from the nodes it adds and removes, without
rebuilding the graph; the accepted step is re-priced on the whole graph.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from optimizer.cost import LAUNCH_OVERHEAD, AnalyticCost, CostModel, foldable
from optimizer.ir import REGISTRY, Graph, Node, Value
from optimizer.passes.fold import DEFAULT_SIZE_LIMIT, fold_constants
from optimizer.rewrite.apply import apply_match, new_nodes, replacement
from optimizer.rewrite.match import GraphContext, Match, MatchIndex, context
from optimizer.rewrite.rule import Op, Rule, RuleSyntaxError, Var, load_rules, rules_dir

__all__ = [
    "AXIOM_FAMILY",
    "LAUNCH_OVERHEAD",
    "LOWERING_FAMILY",
    "AnalyticCost",
    "apply_rules",
    "apply_rules_pass",
    "default_rules",
    "foldable",
    "shipped_rules",
]

#: Family of the verifier's facts: never applied as rewrites.
AXIOM_FAMILY = "axioms"
#: Default budgets of the greedy loop.
DEFAULT_MAX_STEPS = 1000
DEFAULT_TIME_LIMIT = 10.0
#: Rounds of (greedy to a fixed point, fold constants).
_MAX_ROUNDS = 4


# ------------------------------------------------------------------ cost


class Pricer:
    """Prices candidate replacements on one graph with a node-additive cost: the exact change
    of the graph's cost, except that an existing node whose inputs become constant is not
    re-priced as free (so the estimate errs on the costly side)."""

    def __init__(self, graph: Graph, ctx: GraphContext, cost: CostModel) -> None:
        self.ctx = ctx
        self.cost = cost
        self.free = cost.free_nodes(ctx.order)
        self.outputs: dict[Value, int] = {}
        for v in graph.outputs:
            self.outputs[v] = self.outputs.get(v, 0) + 1
        self.protected = set(ctx.protected)

    def uses(self, value: Value) -> int:
        return len(self.ctx.consumers.get(value, ())) + self.outputs.get(value, 0)

    def delta(self, match: Match, values: Sequence[Value]) -> float:
        """Cost change of replacing ``match.roots`` by ``values``: nodes the replacement adds
        minus nodes that nothing reads any more."""
        created = new_nodes(values, self.ctx.position)
        free = set(self.free)
        self.cost.free_nodes(created, free)
        added = sum(self.cost.node_cost(n) for n in created if n not in free)
        remaining: dict[Value, int] = {}

        def uses(v: Value) -> int:
            return remaining[v] if v in remaining else self.uses(v)

        for old, new in zip(match.roots, values, strict=True):
            if new is not old:
                if new.node in self.ctx.position or new.node.is_source:
                    remaining[new] = uses(new) + uses(old)  # the root's readers move over
                remaining[old] = 0
        for node in created:
            for v in set(node.operands):
                if v.node in self.ctx.position:
                    remaining[v] = uses(v) + 1
        removed = 0.0
        dead: set[Node] = set()
        work = [r.node for r in match.roots]
        while work:
            node = work.pop()
            if node in dead or node.is_source or node in self.protected:
                continue
            if any(uses(v) > 0 for v in node.outputs):
                continue
            dead.add(node)
            if node not in self.free:
                removed += self.cost.node_cost(node)
            for v in set(node.operands):
                remaining[v] = uses(v) - 1
                work.append(v.node)
        return added - removed


# ------------------------------------------------------------------ the greedy loop


def describe_nodes(graph: Graph, ctx: GraphContext, nodes: Iterable[Node]) -> list[str]:
    """Names of ``nodes`` in topological order (their ONNX names, or ``op#serial``)."""
    out = []
    for node in sorted(nodes, key=lambda n: ctx.position.get(n, -1)):
        meta = graph.node_meta.get(node)
        out.append(meta.name if meta is not None and meta.name else f"{node.op}#{node.serial}")
    return out


#: Relative cost change below which a greedy step counts as no gain (cost sums are float sums).
TIE_SLACK = 1e-9


def is_commutation(rule: Rule) -> bool:
    """Whether ``rule`` only swaps the inputs of a commutative op (``x+y = y+x``).

    The matcher already tries every input order of a commutative op, so such a rule finds
    nothing new; applied, it only multiplies the graphs an exhaustive search visits.
    """
    if len(rule.match) != 1 or len(rule.rewrite) != 1 or rule.where is not None:
        return False
    before, after = rule.match[0], rule.rewrite[0]
    if not (isinstance(before, Op) and isinstance(after, Op)):
        return False
    opdef = REGISTRY.lookup(before.domain, before.op)
    return (
        opdef is not None
        and opdef.commutative
        and (after.op, after.domain, after.attrs) == (before.op, before.domain, before.attrs)
        and all(isinstance(a, Var) for a in before.args)
        and sorted(a.name for a in after.args if isinstance(a, Var))
        == sorted(a.name for a in before.args if isinstance(a, Var))
        and len(after.args) == len(before.args)
    )


#: Family of the rules the lowering pass applies after the search (rules/lowering.rules).
LOWERING_FAMILY = "lowering"


def applicable(rules: Iterable[Rule]) -> list[Rule]:
    """The rules a search may apply: all but the verifier's axioms, the lowering rules (see
    :mod:`optimizer.passes.lowering`) and the commutations the matcher makes redundant (see
    :func:`is_commutation`)."""
    return [
        r for r in rules
        if r.family not in (AXIOM_FAMILY, LOWERING_FAMILY) and not is_commutation(r)
    ]  # fmt: skip


def apply_rules(
    graph: Graph,
    rules: Sequence[Rule] | MatchIndex,
    *,
    cost: Callable[[Graph], float] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    time_limit: float = DEFAULT_TIME_LIMIT,
    fold: bool = True,
    fold_size_limit: int = DEFAULT_SIZE_LIMIT,
) -> tuple[Graph, list[dict[str, Any]]]:
    """Greedily apply ``rules`` while some application strictly lowers ``cost``.

    Each step takes the first match (by node in topological order, then rule
    order) whose application lowers the cost, applies it and starts over,
    until no match improves, ``max_steps`` steps were taken or ``time_limit``
    seconds passed. With ``fold``, constants are folded after each round that
    changed the graph and the loop runs again (at most a few rounds). Rules
    of the ``axioms`` family are never applied.

    Returns the graph and a trace: one dict per step with ``rule``,
    ``nodes_matched`` (names, or ``op#serial``), ``cost_before`` and ``cost_after``.
    """
    if not isinstance(rules, MatchIndex) or any(r.family == AXIOM_FAMILY for r in rules.rules):
        rules = MatchIndex(applicable(rules.rules if isinstance(rules, MatchIndex) else rules))
    index = rules
    if not index.rules:
        return graph, []
    model = cost if cost is not None else AnalyticCost()
    deadline = time.perf_counter() + time_limit
    trace: list[dict[str, Any]] = []
    opset = graph.meta.opset("")
    built: dict[tuple, tuple[Match, list[Value] | None]] = {}
    memo: dict[tuple[Node, str], list[Match]] = {}
    for _ in range(_MAX_ROUNDS):
        steps_before = len(trace)
        graph = _greedy(graph, index, model, opset, built, memo, trace, max_steps, deadline)
        if len(trace) == steps_before or not fold:
            break
        folded = fold_constants(graph, size_limit=fold_size_limit)
        if folded.key == graph.key or len(trace) >= max_steps or time.perf_counter() > deadline:
            graph = folded
            break
        graph = folded
    return graph, trace


def _greedy(
    graph: Graph,
    index: MatchIndex,
    model: Callable[[Graph], float],
    opset: int | None,
    built: dict[tuple, tuple[Match, list[Value] | None]],
    memo: dict[tuple[Node, str], list[Match]],
    trace: list[dict[str, Any]],
    max_steps: int,
    deadline: float,
) -> Graph:
    """One greedy descent to a fixed point. ``built`` caches replacements and ``memo``
    single-root matches across steps: both stay valid while their nodes are in the graph."""
    current = model(graph)
    rejected: dict[tuple, Match] = {}  # holding the match keeps the ids in its key valid
    while len(trace) < max_steps and time.perf_counter() < deadline:
        ctx = context(graph, opset)
        gone = [k for k, (m, _) in built.items() if not all(n in ctx.position for n in m.nodes)]
        for key in gone:
            del built[key]  # matched nodes left the graph: the match cannot recur
        for key in [k for k in memo if k[0] not in ctx.position]:
            del memo[key]
        pricer = Pricer(graph, ctx, model) if isinstance(model, CostModel) else None
        step = None
        for match in index.matches(graph, opset=opset, memo=memo):
            if time.perf_counter() > deadline:
                break
            key = match.key
            if key in rejected:
                continue
            cached = built.get(key)  # entries hold their match, so ids in keys stay valid
            if cached is None:
                cached = built[key] = (match, replacement(match, opset=opset))
            values = cached[1]
            if values is None:
                continue
            # A gain within float noise of the cost sum is a tie; a tie only changes rounding.
            slack = TIE_SLACK * abs(current)
            if pricer is not None and pricer.delta(match, values) >= -slack:
                continue
            candidate = apply_match(graph, match, opset=opset, values=values)
            if candidate is None:
                rejected[key] = match
                continue
            after = model(candidate)
            if after >= current - slack:
                rejected[key] = match
                continue
            step = (match, candidate, after)
            break
        if step is None:
            break
        match, candidate, after = step
        trace.append(
            {
                "rule": match.rule.name,
                "nodes_matched": describe_nodes(graph, ctx, match.nodes),
                "cost_before": current,
                "cost_after": after,
            }
        )
        graph, current = candidate, after
    return graph


# ------------------------------------------------------------------ the pass

_LOADED: dict[tuple, tuple[list[Rule], MatchIndex]] = {}


def _library(folder: Path | None) -> tuple[list[Rule], MatchIndex]:
    """Every rule of the library in ``folder`` and the search's index of them, loaded once
    and cached until a rule file changes. A library that does not parse is reported as a
    warning and left empty, so that a broken rule file cannot stop ``graphopt optimize``."""
    folder = folder or rules_dir()
    files = sorted(folder.glob("**/*.rules")) if folder.is_dir() else []
    key = (str(folder),) + tuple(
        (str(p), os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in files
    )
    loaded = _LOADED.get(key)
    if loaded is None:
        try:
            rules = load_rules(folder) if files else []
        except RuleSyntaxError as exc:
            warnings.warn(f"rule library not applied: {exc}", stacklevel=3)
            rules = []
        _LOADED.clear()
        loaded = _LOADED[key] = (rules, MatchIndex(applicable(rules)))
    return loaded


def shipped_rules(folder: Path | None = None) -> list[Rule]:
    """Every rule of the shipped library, axioms and lowering rules included (cached)."""
    return _library(folder)[0]


def default_rules(folder: Path | None = None) -> MatchIndex:
    """The rules a search applies (see :func:`applicable`), indexed; cached until a rule
    file changes. A library that does not parse is reported as a warning and not applied."""
    return _library(folder)[1]


def apply_rules_pass(graph: Graph, *, fold_size_limit: int = DEFAULT_SIZE_LIMIT) -> Graph:
    """The ``apply-rules`` pass: :func:`apply_rules` with the shipped library and the
    analytic cost (a no-op while ``rules/`` holds no rules)."""
    index = default_rules()
    if not index.rules:
        return graph
    result, _ = apply_rules(graph, index, fold_size_limit=fold_size_limit)
    return result
