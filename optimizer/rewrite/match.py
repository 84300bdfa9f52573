"""Matching rule patterns against IR graphs.

A rule's ``match`` side is a tuple of root patterns (one per rule output).
:func:`find_matches` finds every place in a graph where all roots match with
consistent bindings, following the semantics of :mod:`optimizer.rewrite.rule`:

- ``Op`` patterns match nodes of the same op, domain and number of inputs
  (trailing omitted optional inputs ignored; an omitted input in the middle
  matches only ``_``). Nodes that must stay distinct (random, opaque custom
  ops) and control-flow nodes never match an ``Op``.
- A tensor ``Var`` binds any value; a repeated one must bind the same
  ``Value`` object (hash-consing makes that structural equality). ``_``
  matches anything without binding.
- A ``Literal`` matches a constant whose elements all equal it.
- Keyword attributes: an ``AttrVar`` binds the attribute's value (the schema
  default when the node omits it, None when there is none either); a repeated
  one must bind equal values. An ``AttrExpr`` is a literal the value must
  equal. Attributes on the node that the pattern does not mention must equal
  their schema default.
- Commutative ops (``OpDef.commutative``) match their inputs in any order.
- Several roots: each root matches a node that no earlier part of the match
  matched (outputs of one multi-output call, which share a call id, come
  from one node), and no bound variable may depend on a root (the rewrite
  would then read its own result). Later roots are looked for among the
  consumers of values already bound, so multi-output patterns cost little
  more than single ones.
- The ``where`` clause must evaluate to a true value; an expression that
  cannot be evaluated (unknown shape, not a constant ...) means no match.

:class:`MatchIndex` indexes rules by the op of their first root, so that one
walk over a graph serves a whole rule library.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimizer.ir import REGISTRY, Graph, Node, Value
from optimizer.ir.ops import CONTROL_FLOW_OPS
from optimizer.rewrite.expr import attr_equal, evaluate, literal_matches
from optimizer.rewrite.rule import AttrExpr, AttrVar, Literal, Op, Pattern, Rule, Var

__all__ = ["Match", "MatchIndex", "find_matches", "iter_matches"]

#: Largest number of inputs of a commutative op whose every order is tried.
_MAX_PERMUTED_INPUTS = 4


@dataclass(frozen=True)
class Match:
    """One place where a rule matches.

    ``roots`` are the values the rule's roots matched, in ``rule.outputs``
    order; ``nodes`` every node an ``Op`` pattern matched.
    """

    rule: Rule
    tensors: dict[str, Value]
    attrs: dict[str, Any]
    roots: tuple[Value, ...]
    nodes: frozenset[Node]

    @property
    def key(self) -> tuple:
        """Identity of the match: rule, roots and bound values (by object identity)."""
        return (
            self.rule.name,
            tuple(id(v) for v in self.roots),
            tuple(sorted((k, id(v)) for k, v in self.tensors.items())),
            tuple(sorted(id(n) for n in self.nodes)),
        )

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Match) and self.key == other.key and self.rule == other.rule


# ------------------------------------------------------------------ graph context


class GraphContext:
    """What matching needs to know about one graph: node order, nodes by op, consumers."""

    def __init__(self, graph: Graph, opset: int | None = None) -> None:
        self.meta = graph.meta  # not the graph: the context cache holds graphs weakly
        self.opset = opset if opset is not None else graph.meta.opset("")
        self.order: list[Node] = graph.nodes()
        self.position: dict[Node, int] = {n: i for i, n in enumerate(self.order)}
        self.by_op: dict[tuple[str, str], list[Node]] = {}
        self.consumers: dict[Value, list[Node]] = {}
        #: Nodes a rewrite must never drop: random generators and opaque custom ops.
        self.protected: list[Node] = [n for n in self.order if n.unique is not None]
        for node in self.order:
            self.by_op.setdefault((_norm(node.domain), node.op), []).append(node)
            for operand in node.operands:
                users = self.consumers.setdefault(operand, [])
                if not users or users[-1] is not node:
                    users.append(node)

    def opset_of(self, domain: str) -> int | None:
        """The opset version imported for ``domain``."""
        if _norm(domain) == "":
            return self.opset
        return self.meta.opset(domain)


_CONTEXTS: weakref.WeakKeyDictionary[Graph, dict[int | None, GraphContext]] = (
    weakref.WeakKeyDictionary()
)


def context(graph: Graph, opset: int | None = None) -> GraphContext:
    """The (cached) matching context of ``graph``."""
    per_graph = _CONTEXTS.setdefault(graph, {})
    ctx = per_graph.get(opset)
    if ctx is None:
        ctx = per_graph[opset] = GraphContext(graph, opset)
    return ctx


def _norm(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


# ------------------------------------------------------------------ bindings


class _State:
    """Bindings of a partial match; copied on every extension (patterns are small)."""

    __slots__ = ("tensors", "attrs", "calls", "nodes")

    def __init__(self, tensors=None, attrs=None, calls=None, nodes=()) -> None:
        self.tensors: dict[str, Value] = tensors or {}
        self.attrs: dict[str, Any] = attrs or {}
        self.calls: dict[int, Node] = calls or {}
        self.nodes: tuple[Node, ...] = nodes

    def bind_tensor(self, name: str, value: Value) -> _State:
        return _State({**self.tensors, name: value}, self.attrs, self.calls, self.nodes)

    def bind_node(self, call: int, node: Node, attrs: dict[str, Any]) -> _State:
        merged = {**self.attrs, **attrs} if attrs else self.attrs
        return _State(self.tensors, merged, {**self.calls, call: node}, self.nodes + (node,))


def _attr_same(actual: Any, expected: Any) -> bool:
    """Attribute equality that also accepts floats equal after rounding to float32 (ONNX
    stores float attributes as float32, rules and Python write doubles)."""
    if attr_equal(actual, expected):
        return True
    if isinstance(actual, float) and isinstance(expected, (int, float)):
        return bool(np.float32(actual) == np.float32(expected))
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(
            _attr_same(a, b) for a, b in zip(actual, expected, strict=True)
        )
    return False


def _literal_value(expr: AttrExpr) -> Any:
    """The value of an attribute literal in a match (evaluated once, cached on the tree)."""
    cached = getattr(expr.tree, "_graphopt_value", _MISSING)
    if cached is _MISSING:
        try:
            cached = evaluate(expr.tree, {})
        except Exception:  # noqa: BLE001 - a literal that does not evaluate matches nothing
            cached = _UNMATCHABLE
        expr.tree._graphopt_value = cached  # type: ignore[attr-defined]
    return cached


_MISSING = object()
_UNMATCHABLE = object()


class _Matcher:
    """Matches the patterns of one rule in one graph context."""

    def __init__(self, rule: Rule, ctx: GraphContext) -> None:
        self.rule = rule
        self.ctx = ctx

    # -- single values

    def value(self, p: Pattern, value: Value | None, st: _State) -> Iterator[_State]:
        if isinstance(p, Var):
            if p.name == "_":
                yield st
            elif value is None:
                return
            elif p.name in st.tensors:
                if st.tensors[p.name] is value:
                    yield st
            else:
                yield st.bind_tensor(p.name, value)
        elif isinstance(p, Literal):
            if value is not None and literal_matches(value, p):
                yield st
        elif isinstance(p, Op) and value is not None:
            yield from self.op(p, value, st)
        # Build patterns never appear in a match.

    def op(self, p: Op, value: Value, st: _State) -> Iterator[_State]:
        node = value.node
        if value.index != p.index:
            return
        bound = st.calls.get(p.call)
        if bound is not None:
            if bound is node:
                yield st  # another output of an already matched call
            return
        if node.op != p.op or _norm(node.domain) != _norm(p.domain) or not self.matchable(node):
            return
        inputs = node.inputs
        end = len(inputs)
        while end and inputs[end - 1] is None:
            end -= 1
        if end != len(p.args):
            return
        inputs = inputs[:end]
        attrs = self.attributes(p, node)
        if attrs is None:
            return
        for name, v in attrs.items():
            if name in st.attrs and not _attr_same(st.attrs[name], v):
                return
        st = st.bind_node(p.call, node, attrs)
        for order in self.orders(node, inputs):
            yield from self.args(p.args, order, st)

    def args(self, pats: Sequence[Pattern], values: Sequence[Value | None], st: _State):
        if not pats:
            yield st
            return
        for nxt in self.value(pats[0], values[0], st):
            yield from self.args(pats[1:], values[1:], nxt)

    def orders(self, node: Node, inputs: tuple) -> Iterable[tuple]:
        opdef = REGISTRY.lookup(node.domain, node.op)
        n = len(inputs)
        if opdef is None or not opdef.commutative or n < 2 or n > _MAX_PERMUTED_INPUTS:
            return (inputs,)
        seen: list[tuple] = []
        for perm in itertools.permutations(inputs):
            if not any(all(a is b for a, b in zip(perm, s, strict=True)) for s in seen):
                seen.append(perm)
        return seen

    @staticmethod
    def matchable(node: Node) -> bool:
        return (
            not node.is_source
            and node.unique is None
            and not node.captures
            and node.op not in CONTROL_FLOW_OPS
        )

    def attributes(self, p: Op, node: Node) -> dict[str, Any] | None:
        """Attribute-variable bindings of ``node`` against ``p``, or None when it does not match."""
        opset = self.ctx.opset_of(node.domain)
        bound: dict[str, Any] = {}
        named = set()
        for name, a in p.attrs:
            named.add(name)
            actual = node.attr(name)
            if actual is None:
                actual = REGISTRY.default_of(node.domain, node.op, opset, name)
            if isinstance(a, AttrVar):
                if a.name in bound and not _attr_same(bound[a.name], actual):
                    return None
                bound[a.name] = actual
            else:
                want = _literal_value(a)
                if want is _UNMATCHABLE or actual is None or not _attr_same(actual, want):
                    return None
        for name, attr in node.attrs:
            if name in named:
                continue
            default = REGISTRY.default_of(node.domain, node.op, opset, name)
            if default is None or not _attr_same(attr.value, default):
                return None
        return bound

    # -- whole rules

    def candidates(self, p: Pattern, st: _State) -> list[Value]:
        """Values a (later) root may match, found from what is already bound when possible."""
        if not isinstance(p, Op):
            return []
        bound = st.calls.get(p.call)
        if bound is not None:
            return [bound.outputs[p.index]] if p.index < len(bound.outputs) else []
        best: list[Node] | None = None
        for anchor, depth in _anchors(p, st):
            nodes = self.consumers_at(anchor, depth)
            if best is None or len(nodes) < len(best):
                best = nodes
        if best is None:
            best = self.ctx.by_op.get((_norm(p.domain), p.op), [])
        return [
            n.outputs[p.index]
            for n in best
            if n.op == p.op and p.index < len(n.outputs) and n not in st.calls.values()
        ]

    def consumers_at(self, value: Value, depth: int) -> list[Node]:
        """Nodes that read ``value`` through exactly ``depth`` >= 1 edges."""
        values = [value]
        frontier: dict[Node, None] = {}
        for _ in range(depth):
            frontier = {}
            for v in values:
                for user in self.ctx.consumers.get(v, ()):
                    frontier[user] = None
            values = [o for n in frontier for o in n.outputs]
        return sorted(frontier, key=lambda n: self.ctx.position.get(n, -1))

    def roots(self, first: Value) -> Iterator[Match]:
        rule = self.rule
        for st in self.value(rule.match[0], first, _State()):
            yield from self.more_roots(1, st, (first,))

    def more_roots(self, k: int, st: _State, roots: tuple[Value, ...]) -> Iterator[Match]:
        rule = self.rule
        if k == len(rule.match):
            match = self.finish(st, roots)
            if match is not None:
                yield match
            return
        p = rule.match[k]
        for value in self.candidates(p, st):
            if any(value is r for r in roots):
                continue
            for nxt in self.value(p, value, st):
                yield from self.more_roots(k + 1, nxt, roots + (value,))

    def finish(self, st: _State, roots: tuple[Value, ...]) -> Match | None:
        rule = self.rule
        tensors = dict(st.tensors)
        if len(roots) > 1 and self.depends_on_roots(st, roots):
            return None
        if rule.where is not None:
            try:
                if not evaluate(rule.where.tree, {**st.attrs, **tensors}):
                    return None
            except Exception:  # noqa: BLE001 - RuleEvalError and friends: no match
                return None
        return Match(rule, tensors, dict(st.attrs), roots, frozenset(st.nodes))

    def depends_on_roots(self, st: _State, roots: tuple[Value, ...]) -> bool:
        """Whether a bound variable is computed from one of the roots (the rewrite would
        then read its own output)."""
        root_nodes = {r.node for r in roots}
        position = self.ctx.position
        lowest = min(position.get(n, -1) for n in root_nodes)
        stack = [v.node for v in st.tensors.values()]
        seen: set[Node] = set()
        while stack:
            node = stack.pop()
            if node in root_nodes:
                return True
            if node in seen or position.get(node, -1) <= lowest:
                continue  # computed before every root: cannot read one
            seen.add(node)
            stack.extend(v.node for v in node.operands)
        return False


def _anchors(p: Op, st: _State, depth: int = 0) -> Iterator[tuple[Value, int]]:
    """Already bound values inside ``p`` with their depth below its root."""
    if depth > 0 and p.call in st.calls:
        node = st.calls[p.call]
        if p.index < len(node.outputs):
            yield node.outputs[p.index], depth
        return
    for a in p.args:
        if isinstance(a, Var) and a.name in st.tensors:
            yield st.tensors[a.name], depth + 1
        elif isinstance(a, Op):
            yield from _anchors(a, st, depth + 1)


# ------------------------------------------------------------------ public API


def _first_root(rule: Rule) -> Op | None:
    return rule.match[0] if rule.match and isinstance(rule.match[0], Op) else None


def iter_matches(graph: Graph, rule: Rule, *, opset: int | None = None) -> Iterator[Match]:
    """Matches of ``rule`` in ``graph``, lazily, in the order of :func:`find_matches`."""
    ctx = context(graph, opset)
    first = _first_root(rule)
    if first is None:
        return
    matcher = _Matcher(rule, ctx)
    for node in ctx.by_op.get((_norm(first.domain), first.op), ()):
        if first.index < len(node.outputs):
            yield from _unique(matcher.roots(node.outputs[first.index]))


def _unique(matches: Iterator[Match]) -> Iterator[Match]:
    seen: set[tuple] = set()
    for m in matches:
        if m.key not in seen:
            seen.add(m.key)
            yield m


def find_matches(
    graph: Graph, rule: Rule, *, opset: int | None = None, limit: int | None = None
) -> list[Match]:
    """Every match of ``rule`` in ``graph`` (at most ``limit``), in a deterministic order:
    by the topological position of the first root's node, then by argument order."""
    it = iter_matches(graph, rule, opset=opset)
    return list(it if limit is None else itertools.islice(it, limit))


class MatchIndex:
    """A rule library indexed by the op of each rule's first root.

    ``matches(graph)`` walks the graph once in topological order and, at each
    node, tries only the rules whose first root has that node's op, so a
    library's cost grows with the rules that could apply, not with its size.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self.by_op: dict[tuple[str, str], list[Rule]] = {}
        for rule in self.rules:
            first = _first_root(rule)
            if first is not None:
                self.by_op.setdefault((_norm(first.domain), first.op), []).append(rule)

    @property
    def max_depth(self) -> int:
        """Edges from a rule's first root to its deepest ``Op`` pattern (over all rules): a
        match that includes node N has its first root at N or at most this far below it."""
        def depth(p) -> int:
            if not isinstance(p, Op):
                return -1
            return 1 + max((depth(a) for a in p.args), default=-1)

        return max((max(depth(r) for r in rule.match) for rule in self.rules), default=0)

    def matches_at(
        self,
        graph: Graph,
        anchors: Iterable[Node],
        *,
        opset: int | None = None,
        memo: dict[tuple[Node, str], list[Match]] | None = None,
    ) -> Iterator[Match]:
        """Matches whose first root is an output of one of ``anchors`` (nodes of ``graph``),
        in topological order: :meth:`matches` restricted to a neighbourhood."""
        ctx = context(graph, opset)
        chosen = sorted(
            (n for n in set(anchors) if n in ctx.position), key=ctx.position.__getitem__
        )
        yield from self._matches(ctx, chosen, memo)

    def matches(
        self,
        graph: Graph,
        *,
        opset: int | None = None,
        memo: dict[tuple[Node, str], list[Match]] | None = None,
    ) -> Iterator[Match]:
        """All matches of all rules: by node in topological order, then rule order.

        ``memo`` (owned by the caller, for one opset) keeps the matches of single-root
        rules per (node, rule) across graphs: those depend only on the node and what it
        reads, which hash-consing makes immutable. Multi-root rules look at consumers,
        which change from graph to graph, and are matched afresh. The caller prunes the
        memo (entries keep their nodes alive).
        """
        ctx = context(graph, opset)
        yield from self._matches(ctx, ctx.order, memo)

    def _matches(
        self,
        ctx: GraphContext,
        nodes: Iterable[Node],
        memo: dict[tuple[Node, str], list[Match]] | None,
    ) -> Iterator[Match]:
        matchers: dict[str, _Matcher] = {}
        for node in nodes:
            rules = self.by_op.get((_norm(node.domain), node.op))
            if not rules:
                continue
            for rule in rules:
                first = rule.match[0]
                assert isinstance(first, Op)
                if first.index >= len(node.outputs):
                    continue
                key = (node, rule.name)
                found = memo.get(key) if memo is not None else None
                if found is None:
                    matcher = matchers.get(rule.name)
                    if matcher is None:
                        matcher = matchers[rule.name] = _Matcher(rule, ctx)
                    found = _unique(matcher.roots(node.outputs[first.index]))
                    if memo is not None and len(rule.match) == 1:
                        found = memo[key] = list(found)
                yield from found
