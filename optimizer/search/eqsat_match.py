"""E-matching: finding a rule's patterns in an :class:`~optimizer.search.egraph.EGraph`.

The semantics are those of :mod:`optimizer.rewrite.match` lifted from values to e-classes:

- an ``Op`` pattern matches an e-node of the same op, domain, input count and attributes
  (attribute matching is the graph matcher's own, :meth:`_Matcher.attributes`); its argument
  patterns match the e-node's input *classes*, where a nested ``Op`` may match any member
  e-node of that class, so one match may combine nodes that no single graph holds together;
- a tensor ``Var`` binds a class, and a repeated one must bind the same class (equality in the
  e-graph, not just object identity); ``where`` clauses and rewrites see the class's
  representative value (a constant when the class holds one);
- a ``Literal`` matches a class holding a constant filled with it;
- commutative ops match their inputs in any order;
- several roots (multi-pattern rules, as Tensat's): each later root is an e-node that no
  earlier part of the match matched, looked for among the readers of classes already bound.
  Unlike in a graph, no check that bound variables do not depend on a root is needed: the
  rule's equation holds whatever reads what, and extraction keeps the chosen graph acyclic.

Constants: given saturation's constant analysis (``consts``, a
:class:`~optimizer.search.eqsat_fold.ConstantFolder`), ``is_const(x)`` in a ``where`` clause
holds for a class that holds a constant *or* is computable from constants alone (its value
folds before the model runs, and extraction prices it as free), without folding it. A condition
that reads a computed class's data (``value``, ``all_equal``, ``is_identity_matrix``,
``is_scalar_like``, a literal) cannot be decided before it is folded: when every other
condition of the match holds, the match asks for those classes to be folded
(:meth:`~optimizer.search.eqsat_fold.ConstantFolder.demand`) instead of being returned, and is
found again once the fold has changed them.

Enumeration is bounded by the caller (``limit``), since a pattern of depth ``d`` over classes
of ``k`` members has up to ``k ** d`` matches.
"""

from __future__ import annotations

import ast
import copy
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from optimizer.ir import REGISTRY, Node, Value, ValueType
from optimizer.rewrite.expr import evaluate, literal_matches
from optimizer.rewrite.match import _attr_same, _Matcher
from optimizer.rewrite.rule import Literal, Op, Pattern, Rule, Var
from optimizer.search.egraph import EGraph

__all__ = ["EMatch", "EMatcher", "is_commutative", "pattern_depth", "pattern_ops"]

#: Largest number of inputs of a commutative op whose every order is tried (as the matcher).
_MAX_PERMUTED_INPUTS = 4


@dataclass(frozen=True)
class EMatch:
    """One match in an e-graph: bound classes, attribute values, the classes of the roots
    (in ``rule.outputs`` order) and the e-nodes the ``Op`` patterns matched."""

    rule: Rule
    tensors: dict[str, int]
    attrs: dict[str, Any]
    roots: tuple[int, ...]
    enodes: tuple[int, ...]

    def key(self, eg: EGraph) -> tuple:
        """Identity of the match up to the e-graph's current equalities."""
        return (
            self.rule.name,
            tuple(eg.find(c) for c in self.roots),
            tuple(sorted((k, eg.find(c)) for k, c in self.tensors.items())),
            tuple(sorted(eg.live(e) for e in self.enodes)),
        )


_MISSING = object()


class _State:
    """Bindings of a partial match (copied on extension: patterns are small); ``deferred``:
    computed classes whose data a condition needs (module docstring)."""

    __slots__ = ("tensors", "attrs", "calls", "enodes", "deferred")

    def __init__(self, tensors=None, attrs=None, calls=None, enodes=(), deferred=()) -> None:
        self.tensors: dict[str, int] = tensors or {}
        self.attrs: dict[str, Any] = attrs or {}
        self.calls: dict[int, int] = calls or {}
        self.enodes: tuple[int, ...] = enodes
        self.deferred: tuple[int, ...] = deferred


class Constants(Protocol):
    """What e-matching asks of saturation's constant analysis
    (:class:`~optimizer.search.eqsat_fold.ConstantFolder`)."""

    def constant_like(self, c: int) -> bool: ...

    def unfolded(self, c: int) -> bool: ...

    def demand(self, classes: Iterable[int]) -> None: ...


class _OpsetContext:
    """What :meth:`_Matcher.attributes` reads of a graph context: the opset per domain."""

    def __init__(self, opset_of) -> None:
        self.opset_of = opset_of


def pattern_depth(rule: Rule) -> int:
    """Levels of ``Op`` patterns under the first root, counting Var/Literal leaves as a level
    (a change that deep below a root e-node can change the rule's matches there)."""

    def depth(p: Pattern) -> int:
        if isinstance(p, Op):
            return 1 + max((depth(a) for a in p.args), default=0)
        return 1 if isinstance(p, (Var, Literal)) else 0

    return depth(rule.match[0])


def pattern_ops(rule: Rule) -> frozenset[tuple[str, str]]:
    """The (domain, op) of every ``Op`` pattern of the rule's roots: a rule can only match
    where each of them occurs."""
    found: set[tuple[str, str]] = set()
    stack = list(rule.match)
    while stack:
        p = stack.pop()
        if isinstance(p, Op):
            found.add((p.domain, p.op))
            stack.extend(p.args)
    return frozenset(found)


class EMatcher:
    """Matches one rule's patterns in an e-graph (see the module docstring)."""

    def __init__(self, eg: EGraph, rule: Rule, opset_of, consts: Constants | None = None) -> None:
        self.eg = eg
        self.rule = rule
        self.consts = consts
        # The graph matcher's attribute and matchability checks, so both agree exactly.
        self._graph_matcher = _Matcher(rule, _OpsetContext(opset_of))  # type: ignore[arg-type]
        self._conjuncts: list[_Conjunct] | None = None  # on first use
        self._all = -1
        self._verdicts: dict[tuple, bool] = {}
        self._local: dict[tuple[int, int], Any] = {}
        self._static: dict[tuple[int, int], Any] = {}
        self._taken: set[int] | None = None

    # ------------------------------------------------------------------ single patterns

    def value(self, p: Pattern, c: int | None, st: _State) -> Iterator[_State]:
        if isinstance(p, Var):
            if p.name == "_":
                yield st
            elif c is None:
                return
            elif p.name in st.tensors:
                if self.eg.find(st.tensors[p.name]) == c:
                    yield st
            else:
                yield _State({**st.tensors, p.name: c}, st.attrs, st.calls, st.enodes, st.deferred)
        elif isinstance(p, Literal):
            const = None if c is None else self.eg.klass(c).const
            if const is not None:
                if literal_matches(const, p):
                    yield st
            elif c is not None and self.consts is not None and self.consts.unfolded(c):
                yield _State(st.tensors, st.attrs, st.calls, st.enodes, st.deferred + (c,))
        elif isinstance(p, Op) and c is not None:
            for e in self.eg.members(c):
                yield from self.op(p, e, c, st)

    def op(self, p: Op, e: int, c: int | None, st: _State) -> Iterator[_State]:
        """Matches of ``p`` rooted at e-node ``e`` (whose output ``p.index`` must lie in class
        ``c`` when ``c`` is given). The e-graph must be rebuilt (its e-nodes' input classes
        canonical), as it is between saturation's write phases."""
        eg = self.eg
        enode = eg.enodes[e]
        if enode.node.op != p.op:
            return
        outs = enode.outs
        if p.index >= len(outs) or (c is not None and eg.find(outs[p.index]) != c):
            return
        bound = st.calls.get(p.call)
        if bound is not None:
            if eg.live(bound) == e:
                yield st  # another output of an already matched call
            return
        local = self._local.get((p.call, e), _MISSING)
        if local is _MISSING:
            local = self._local[(p.call, e)] = self._local_match(p, e)
        if local is None:
            return
        attrs, orders = local
        for name, v in attrs.items():
            if name in st.attrs and not _same_attr(st.attrs[name], v):
                return
        merged = {**st.attrs, **attrs} if attrs else st.attrs
        st = _State(st.tensors, merged, {**st.calls, p.call: e}, st.enodes + (e,), st.deferred)
        for order in orders:
            yield from self.args(p.args, order, st)

    def _local_match(self, p: Op, e: int) -> tuple[dict[str, Any], list[tuple]] | None:
        """What ``p`` needs of e-node ``e`` alone: its attribute bindings and the orders of its
        input classes to try, or None when op, domain, arity or attributes rule it out.
        Cached until :meth:`forget`: input classes change when the e-graph does."""
        static = self._static.get((p.call, e), _MISSING)
        if static is _MISSING:
            static = self._static[(p.call, e)] = self._static_match(p, e)
        if static is None:
            return None
        attrs, end = static
        return attrs, _orders(self.eg.enodes[e].node, self.eg.kid_classes(e)[:end])

    def _static_match(self, p: Op, e: int) -> tuple[dict[str, Any], int] | None:
        """The part of :meth:`_local_match` that depends on e-node ``e``'s IR node alone, which
        never changes: the attribute bindings and the number of inputs up to the last given
        one (kept for the whole search)."""
        node = self.eg.enodes[e].node
        if _norm(node.domain) != _norm(p.domain) or not self._graph_matcher.matchable(node):
            return None
        end = len(node.inputs)
        while end and node.inputs[end - 1] is None:
            end -= 1
        if end != len(p.args):
            return None
        attrs = self._graph_matcher.attributes(p, node)
        return None if attrs is None else (attrs, end)

    def forget(self) -> None:
        """Drop what :meth:`_local_match` cached (call after the e-graph changed)."""
        self._local.clear()

    def args(self, pats, classes, st: _State) -> Iterator[_State]:
        if not pats:
            yield st
            return
        for nxt in self.value(pats[0], classes[0], st):
            yield from self.args(pats[1:], classes[1:], nxt)

    # ------------------------------------------------------------------ whole rules

    def matches(
        self,
        roots: list[int],
        deadline: float | None = None,
        taken: set[int] | None = None,
    ) -> Iterator[EMatch]:
        """Matches whose first root is one of the e-nodes ``roots`` (in their order); stops
        early once ``deadline`` (perf_counter) has passed.

        ``taken`` (canonical class ids, which the caller may extend while it consumes the
        matches) excludes root classes: no root of a match lies in one, and the search for
        matches at a first root stops as soon as its class is taken."""
        first = self.rule.match[0]
        assert isinstance(first, Op)
        self._taken = taken
        for i, e in enumerate(roots):
            if deadline is not None and i % 32 == 31 and time.perf_counter() >= deadline:
                return
            if not self.eg.enodes[e].alive or first.index >= len(self.eg.enodes[e].outs):
                continue
            root = self.eg.find(self.eg.enodes[e].outs[first.index])
            if taken is not None and root in taken:
                continue
            for st in self.op(first, e, root, _State()):
                for found in self._more_roots(1, st, (root,), 0):
                    yield found
                    if taken is not None and root in taken:
                        break
                else:
                    continue
                break

    def _more_roots(
        self, k: int, st: _State, roots: tuple[int, ...], done: int
    ) -> Iterator[EMatch]:
        rule = self.rule
        # Test each conjunct of the where clause as soon as the roots so far bind all of its
        # variables: a multi-root rule then prunes before it joins the next root.
        done, st = self._check(st, done)
        if done < 0:
            return
        if k == len(rule.match):
            if st.deferred:  # found again once these classes are folded
                self.consts.demand(st.deferred)  # type: ignore[union-attr]
                return
            yield EMatch(rule, dict(st.tensors), dict(st.attrs), roots, st.enodes)
            return
        p = rule.match[k]
        if not isinstance(p, Op):
            return
        for e in self._candidates(p, st):
            if p.index >= len(self.eg.enodes[e].outs):
                continue
            root = self.eg.find(self.eg.enodes[e].outs[p.index])
            if root in roots or (self._taken is not None and root in self._taken):
                continue
            for nxt in self.op(p, e, root, st):
                yield from self._more_roots(k + 1, nxt, roots + (root,), done)

    def _candidates(self, p: Op, st: _State) -> list[int]:
        """E-nodes a later root may match: readers (``depth`` levels up) of a bound class."""
        eg = self.eg
        bound = st.calls.get(p.call)
        if bound is not None:
            return [eg.live(bound)]
        best: list[int] | None = None
        for anchor, depth in _anchors(p, st, eg):
            found = self._readers(anchor, depth)
            if best is None or len(found) < len(best):
                best = found
        if best is None:
            best = eg.by_op(p.domain, p.op)
        taken = {eg.live(e) for e in st.calls.values()}
        return [
            e
            for e in best
            if eg.enodes[e].node.op == p.op and p.index < len(eg.enodes[e].outs) and e not in taken
        ]

    def _readers(self, c: int, depth: int) -> list[int]:
        """E-nodes that read class ``c`` through exactly ``depth`` >= 1 edges."""
        classes = {self.eg.find(c)}
        found: set[int] = set()
        for _ in range(depth):
            found = {p for k in classes for p in self.eg.parents(k)}
            classes = {self.eg.find(o) for e in found for o in self.eg.enodes[e].outs}
        return sorted(found)

    def _check(self, st: _State, done: int) -> tuple[int, _State]:
        """Evaluate the conjuncts not yet in ``done`` (a bit mask) whose variables ``st``
        binds; the new mask, or -1 when one is false or cannot be evaluated, and the state
        with the classes of the conjuncts deferred until a fold (module docstring)."""
        if self._conjuncts is None:
            self._conjuncts = _conjuncts(self.rule)
            self._all = (1 << len(self._conjuncts)) - 1
        if done == self._all:
            return done, st
        eg = self.eg
        env: dict[str, Any] | None = None
        reps: dict[str, Value] = {}
        for i, term in enumerate(self._conjuncts):
            if done >> i & 1 or not all(n in st.tensors or n in st.attrs for n in term.names):
                continue
            parts: list[Any] = [i]
            for n in term.names:
                c = st.tensors.get(n)
                if c is None:
                    parts.append(repr(st.attrs[n]))
                else:
                    rep = reps.get(n)
                    if rep is None:
                        rep = reps[n] = eg.rep(c)
                    parts.append(id(rep))
            parts.extend(self._is_const(st.tensors[n]) for n in term.const_names)
            parts.extend(self._unfolded(st.tensors[n]) for n in term.data)
            key = tuple(parts)
            ok = self._verdicts.get(key)
            if ok is None:  # representatives live in the e-graph: their ids are stable
                if env is None:
                    env = {**st.attrs, **{k: eg.rep(c) for k, c in st.tensors.items()}}
                    env.update((_IS_CONST + k, self._is_const(c)) for k, c in st.tensors.items())
                try:
                    ok = bool(evaluate(term.tree, env))
                except Exception:  # noqa: BLE001 - RuleEvalError and friends: no match
                    ok = False
                if not ok and any(self._unfolded(st.tensors[n]) for n in term.data):
                    ok = _DEFER if self._may_hold(term, env) else False
                self._verdicts[key] = ok
            if ok is _DEFER:
                waiting = tuple(
                    eg.find(st.tensors[n]) for n in term.data if self._unfolded(st.tensors[n])
                )
                st = _State(st.tensors, st.attrs, st.calls, st.enodes, st.deferred + waiting)
            elif not ok:
                return -1, st
            done |= 1 << i
        return done, st

    @staticmethod
    def _may_hold(term: _Conjunct, env: dict[str, Any]) -> bool:
        """Whether a conjunct that reads the data of a class not yet folded may hold once it
        is: false only for the tests that the value's type refutes (a non-square matrix is
        no identity; a tensor of several elements is not scalar-like), so that no fold is
        asked for in vain (BERT's concatenated weights, 265 MB, for ``is_identity_matrix``)."""
        tree = term.tree
        if not (
            isinstance(tree, ast.Call)
            and isinstance(tree.func, ast.Name)
            and len(tree.args) == 1
            and isinstance(tree.args[0], ast.Name)
        ):
            return True
        test = _TYPE_TESTS.get(tree.func.id)
        value = env.get(tree.args[0].id)
        return test is None or not isinstance(value, Value) or test(value.type)

    def _unfolded(self, c: int) -> bool:
        return self.consts is not None and self.consts.unfolded(c)

    def _is_const(self, c: int) -> bool:
        """``is_const`` of class ``c``: it holds a constant, or (given the constant analysis)
        it is computed from constants alone."""
        cls = self.eg.klass(c)
        return cls.const is not None or (self.consts is not None and cls.computed)

    def tensor_values(self, match: EMatch) -> dict[str, Value]:
        """The representative value of each bound class."""
        return {k: self.eg.rep(c) for k, c in match.tensors.items()}

    def nodes(self, match: EMatch) -> frozenset[Node]:
        """The IR nodes of the matched e-nodes."""
        return frozenset(self.eg.enodes[e].node for e in match.enodes)


def _anchors(p: Op, st: _State, eg: EGraph, depth: int = 0) -> Iterator[tuple[int, int]]:
    """Classes already bound inside ``p``, with their depth below its root."""
    if depth > 0 and p.call in st.calls:
        outs = eg.enodes[eg.live(st.calls[p.call])].outs
        if p.index < len(outs):
            yield outs[p.index], depth
        return
    for a in p.args:
        if isinstance(a, Var) and a.name in st.tensors:
            yield st.tensors[a.name], depth + 1
        elif isinstance(a, Op):
            yield from _anchors(a, st, eg, depth + 1)


#: Functions of rule conditions that read a constant's data, not only its type.
_DATA_FUNCTIONS = frozenset({"value", "all_equal", "is_identity_matrix", "is_scalar_like"})
#: Prefix of the name that stands for ``is_const(x)`` in a conjunct (``_IS_CONST + "x"``).
_IS_CONST = "is_const:"
#: Verdict of a conjunct that needs the data of a class not yet folded.
_DEFER = "defer"


def _may_be_identity(t: ValueType) -> bool:
    shape = getattr(t, "shape", None)
    if shape is None:
        return True
    return (
        len(shape) >= 2
        and not (all(isinstance(d, int) for d in shape[:2]) and shape[0] != shape[1])
        and all(not isinstance(d, int) or d == 1 for d in shape[2:])
    )


def _may_be_scalar(t: ValueType) -> bool:
    shape = getattr(t, "shape", None)
    return shape is None or all(not isinstance(d, int) or d == 1 for d in shape)


#: Data tests whose answer the type may already give (no when it returns False).
_TYPE_TESTS = {"is_identity_matrix": _may_be_identity, "is_scalar_like": _may_be_scalar}


@dataclass(frozen=True)
class _Conjunct:
    """One top-level ``and`` term of a where clause: its tree with ``is_const(x)`` on tensor
    variables read from the environment (``_IS_CONST + "x"``), the rule variables it reads,
    those it asks ``is_const`` of, and those whose data it reads."""

    tree: ast.expr
    names: tuple[str, ...]
    const_names: tuple[str, ...]
    data: tuple[str, ...]


def _conjuncts(rule: Rule) -> list[_Conjunct]:
    """The where clause's conjuncts (cached per rule object: the library is loaded once, and
    walking every rule's patterns took 0.7 s of each search)."""
    cached = _CONJUNCTS.get(id(rule))
    if cached is not None and cached[0] is rule:
        return cached[1]
    found = _split_conjuncts(rule)
    _CONJUNCTS[id(rule)] = (rule, found)
    return found


_CONJUNCTS: dict[int, tuple[Rule, list[_Conjunct]]] = {}


def _split_conjuncts(rule: Rule) -> list[_Conjunct]:
    if rule.where is None:
        return []
    terms: list[ast.expr] = []
    stack = [rule.where.tree]
    while stack:
        tree = stack.pop()
        if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And):
            stack.extend(reversed(tree.values))  # popped in their written order
        else:
            terms.append(tree)
    tensors = set(rule.variables())
    known = tensors | set(rule.attr_variables())
    out = []
    for term in terms:
        names = {n.id for n in ast.walk(term) if isinstance(n, ast.Name) and n.id in known}
        data = {
            n.id
            for call in ast.walk(term)
            if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id in _DATA_FUNCTIONS
            for arg in call.args
            for n in ast.walk(arg)
            if isinstance(n, ast.Name) and n.id in tensors
        }
        tree, const_names = _const_lookups(term, tensors)
        out.append(
            _Conjunct(tree, tuple(sorted(names)), tuple(sorted(const_names)), tuple(sorted(data)))
        )
    return out


def _const_lookups(term: ast.expr, tensors: set[str]) -> tuple[ast.expr, set[str]]:
    """``term`` with each ``is_const(x)`` of a tensor variable replaced by a lookup of
    ``_IS_CONST + "x"``, and the variables so replaced. Only the nodes on the way to a
    replacement are copied (the rule's own tree is left as it is)."""
    replaced: set[str] = set()

    def walk(node: ast.AST) -> ast.AST:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "is_const"
            and len(node.args) == 1
            and not node.keywords
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in tensors
        ):
            replaced.add(node.args[0].id)
            return ast.copy_location(ast.Name(_IS_CONST + node.args[0].id, ast.Load()), node)
        changes = {}
        for name, value in ast.iter_fields(node):
            if isinstance(value, ast.AST):
                new = walk(value)
                if new is not value:
                    changes[name] = new
            elif isinstance(value, list):
                items = [walk(v) if isinstance(v, ast.AST) else v for v in value]
                if any(a is not b for a, b in zip(items, value, strict=True)):
                    changes[name] = items
        if not changes:
            return node
        node = copy.copy(node)
        for name, value in changes.items():
            setattr(node, name, value)
        return node

    try:
        return walk(term), replaced  # type: ignore[return-value]
    finally:
        # A self-calling nested function is a reference cycle; searches pause the cyclic
        # collector, so its cell is emptied by hand.
        walk = None  # type: ignore[assignment]


def is_commutative(domain: str, op: str) -> bool:
    """Whether the registry marks ``op`` commutative (cached)."""
    found = _COMMUTATIVE.get((domain, op))
    if found is None:
        opdef = REGISTRY.lookup(domain, op)
        found = _COMMUTATIVE[(domain, op)] = opdef is not None and opdef.commutative
    return found


_COMMUTATIVE: dict[tuple[str, str], bool] = {}


def _orders(node: Node, kids: tuple) -> list[tuple]:
    n = len(kids)
    if n < 2 or n > _MAX_PERMUTED_INPUTS or not is_commutative(node.domain, node.op):
        return [kids]
    return list(dict.fromkeys(itertools.permutations(kids)))


def _same_attr(a: Any, b: Any) -> bool:
    return a is b or _attr_same(a, b)


def _norm(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain
