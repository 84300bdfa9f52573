"""All-shape proofs from operator axioms (TASO's approach).

Tensors are elements of one uninterpreted z3 sort; every op is an uninterpreted
function whose symbol is the op, its domain, the attribute names the pattern
mentions, its arity and the output index. Attribute values are arguments of a
second sort (literals are distinct constants, attribute variables free ones),
so a proof holds for every shape *and* every value of the rule's attribute
variables. The axioms are the rules of ``rules/axioms.rules`` without a
``where`` clause, each proved like any rule (bounded and numerically); they
enter z3 as universally quantified equations with their two sides as
triggers. A rule is proved for all shapes when z3 shows ``lhs == rhs`` from
them within a short timeout.

What this layer cannot see: ``where`` clauses (a proof ignores them, so it
proves a stronger statement), constants (rules with literals or built
constants are left to the bounded layer), and types: like TASO's, the axioms
are applied to well-typed terms only in the models that matter, which is why
every axiom is chosen so that one side type-checks exactly when the other does.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from functools import lru_cache

import z3

from optimizer.rewrite.rule import AttrExpr, AttrVar, Op, Pattern, Rule, Var

AXIOM_FAMILY = "axioms"
TIMEOUT_MS = 2000


class _Untranslatable(Exception):
    """The rule uses something the axiom world has no term for."""


class _World:
    """Sorts, symbols and constants of one query."""

    def __init__(self) -> None:
        self.tensor = z3.DeclareSort("Tensor")
        self.attr = z3.DeclareSort("Attr")
        self.functions: dict[tuple, z3.FuncDeclRef] = {}
        self.literals: dict[str, z3.ExprRef] = {}

    def symbol(self, p: Op) -> tuple[z3.FuncDeclRef, tuple]:
        key = (p.domain, p.op, tuple(name for name, _ in p.attrs), len(p.args), p.index)
        if key not in self.functions:
            sorts = [self.attr] * len(p.attrs) + [self.tensor] * len(p.args) + [self.tensor]
            op = f"{p.domain}.{p.op}" if p.domain else p.op
            name = f"{op}[{','.join(key[2])}]/{len(p.args)}#{p.index}"
            self.functions[key] = z3.Function(name, *sorts)
        return self.functions[key], key

    def literal(self, value: object) -> z3.ExprRef:
        text = repr(_plain(value))
        if text not in self.literals:
            self.literals[text] = z3.Const(f"attr:{text}", self.attr)
        return self.literals[text]


def _plain(v: object) -> object:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, bytes):
        return v.decode()
    return v


def _translate(
    roots: Sequence[Pattern], world: _World, prefix: str, tensors: dict, attrs: dict, used: set
):
    """z3 terms of a rule side; ``tensors``/``attrs`` map variable names to z3 constants."""
    memo: dict[int, z3.ExprRef] = {}

    def attr_term(a) -> z3.ExprRef:
        if isinstance(a, AttrVar):
            return attrs.setdefault(a.name, z3.Const(f"{prefix}@{a.name}", world.attr))
        assert isinstance(a, AttrExpr)
        tree = a.tree
        if isinstance(tree, ast.Name):  # an attribute variable passed on by a rewrite
            if tree.id not in attrs:
                raise _Untranslatable(f"attribute expression {a.source!r}")
            return attrs[tree.id]
        try:
            return world.literal(ast.literal_eval(tree))
        except ValueError:
            raise _Untranslatable(f"attribute expression {a.source!r}") from None

    def term(p: Pattern) -> z3.ExprRef:
        if isinstance(p, Var):
            if p.name == "_":
                raise _Untranslatable("wildcard")
            return tensors.setdefault(p.name, z3.Const(f"{prefix}{p.name}", world.tensor))
        if not isinstance(p, Op):
            raise _Untranslatable(type(p).__name__.lower())
        key = (id(p), p.index)
        if key not in memo:
            fn, sym = world.symbol(p)
            used.add(sym)
            memo[key] = fn(*[attr_term(a) for _, a in p.attrs], *[term(a) for a in p.args])
        return memo[key]

    return [term(r) for r in roots]


def axiom_formulas(axioms: Sequence[Rule], world: _World) -> list[tuple[z3.BoolRef, set]]:
    """Each where-free axiom as ``ForAll(vars, lhs == rhs)`` with the symbols it uses."""
    out = []
    for k, ax in enumerate(axioms):
        if ax.where is not None and not _shape_only(ax.where.tree):
            continue
        tensors: dict = {}
        attrs: dict = {}
        used: set = set()
        try:
            lhs = _translate(ax.match, world, f"a{k}.", tensors, attrs, used)
            rhs = _translate(ax.rewrite, world, f"a{k}.", tensors, attrs, used)
        except _Untranslatable:
            continue
        bound = list(tensors.values()) + list(attrs.values())
        for left, right in zip(lhs, rhs, strict=False):
            body = left == right
            if not bound:
                out.append((body, used))
                continue
            patterns = [p for p in (left, right) if _is_app(p) and _covers(p, bound)]
            if not patterns:
                continue  # no usable trigger (e.g. x = f(x) needs one covering every variable)
            out.append((z3.ForAll(bound, body, patterns=patterns), used))
    return out


#: Where-clause functions that only describe shapes (typing side conditions of an axiom).
_SHAPE_FUNCTIONS = frozenset(
    {"same_shape", "rank", "dim", "static_dim", "shape", "broadcasts_to", "len"}
)


def _shape_only(tree: ast.expr) -> bool:
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    return all(isinstance(c.func, ast.Name) and c.func.id in _SHAPE_FUNCTIONS for c in calls)


def _is_app(e: z3.ExprRef) -> bool:
    return z3.is_app(e) and e.num_args() > 0


def _covers(e: z3.ExprRef, bound: list) -> bool:
    wanted = {b.get_id() for b in bound}
    seen: set[int] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if z3.is_const(x):
            seen.add(x.get_id())
        stack.extend(x.children())
    return wanted <= seen


def prove_all_shapes(
    rule: Rule,
    instances=None,
    *,
    axioms: Sequence[Rule] | None = None,
    timeout_ms: int = TIMEOUT_MS,
) -> tuple[bool, str]:
    """``(True, why)`` when the rule follows from the axioms for every shape."""
    if rule.family == AXIOM_FAMILY:
        return False, "an axiom is not proved from the axioms"
    axioms = list(default_axioms() if axioms is None else axioms)
    axioms = [a for a in axioms if a.name != rule.name]
    if not axioms:
        return False, "no axioms"
    world, formulas = _axiom_world(tuple(axioms))
    tensors: dict = {}
    attrs: dict = {}
    used: set = set()
    try:
        lhs = _translate(rule.match, world, "", tensors, attrs, used)
        rhs = _translate(rule.rewrite, world, "", tensors, attrs, used)
    except _Untranslatable as exc:
        return False, f"no axiom encoding ({exc})"
    relevant = [(f, syms) for f, syms in formulas if syms <= used]
    if not relevant:
        return False, "no axiom applies"
    solver = z3.Solver()
    solver.set("timeout", int(timeout_ms))
    solver.set("auto_config", False)
    solver.set("mbqi", False)
    for f, _ in relevant:
        solver.add(f)
    if len(world.literals) > 1:
        solver.add(z3.Distinct(*world.literals.values()))
    solver.add(z3.Not(z3.And(*[a == b for a, b in zip(lhs, rhs, strict=False)])))
    verdict = solver.check()
    if verdict == z3.unsat:
        return True, f"from {len(relevant)} axiom(s)"
    return False, "not derivable" if verdict == z3.sat else "axiom search timed out"


@lru_cache(maxsize=8)
def _axiom_world(axioms: tuple[Rule, ...]) -> tuple[_World, list[tuple[z3.BoolRef, set]]]:
    """One world per axiom set, its axioms translated once (rules share its symbols)."""
    world = _World()
    return world, axiom_formulas(axioms, world)


@lru_cache(maxsize=1)
def _shipped_axioms() -> tuple[Rule, ...]:
    from optimizer.rewrite.rule import load_rules

    return tuple(r for r in load_rules() if r.family == AXIOM_FAMILY)


def default_axioms() -> tuple[Rule, ...]:
    """The shipped axioms (``rules/axioms.rules``)."""
    try:
        return _shipped_axioms()
    except Exception:  # noqa: BLE001 - a broken library leaves this layer idle, never fails
        return ()
