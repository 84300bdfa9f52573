"""The shipped rule library (``rules/*.rules``): size, names, comments, one family per file, and
where-clauses and rewrites that only use the functions the rule language defines.

The proof of every rule is the verifier's parametrized test; this file checks the library's
form, so that a malformed or misnamed rule fails fast and with a clear message.
"""

from __future__ import annotations

import ast
import re

import pytest

from optimizer.rewrite import load_rules, parse_rules, rules_dir
from optimizer.rewrite.expr import FUNCTIONS
from optimizer.rewrite.rule import BUILDERS, AttrExpr, Build, Op

#: The verifier's operator facts live in rules/ too but are not rewrites.
AXIOMS = "axioms"
#: The rewrite families and the least number of rules each is expected to hold.
FAMILIES = {
    "algebra": 30,
    "scalar": 15,
    "matmul": 20,
    "conv": 15,
    "layout": 25,
    "activation": 15,
    "transformer": 15,
    "lowering": 1,
}
KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
#: Names a where-clause or attribute expression may use besides bound variables.
KNOWN_NAMES = set(FUNCTIONS) | {"True", "False", "None"}


def library():
    return [r for r in load_rules() if r.family != AXIOMS]


def rule_files():
    return sorted(p for p in rules_dir().glob("*.rules") if p.stem != AXIOMS)


def test_library_has_at_least_100_rules():
    assert len(library()) >= 100


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_has_its_file(family):
    path = rules_dir() / f"{family}.rules"
    assert path.is_file(), f"missing rule file {path}"
    rules = parse_rules(path.read_text(), family=family, path=str(path))
    assert len(rules) >= FAMILIES[family], f"{family}: only {len(rules)} rules"
    assert {r.family for r in rules} == {family}


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_every_rule_file_parses_on_its_own(path):
    rules = parse_rules(path.read_text(), family=path.stem, path=str(path))
    assert rules, f"{path.name} holds no rules"


def test_rule_names_are_unique_kebab_case():
    names = [r.name for r in library()]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    bad = [n for n in names if not KEBAB.match(n)]
    assert not bad, bad


def test_every_rule_has_a_one_line_comment():
    for r in library():
        assert r.comment.strip(), f"{r.name} has no comment"
        assert "\n" not in r.comment, f"{r.name}: the comment must be one line"
        assert len(r.comment.split()) >= 3, (
            f"{r.name}: say what the rule does and why: {r.comment!r}"
        )


def test_rules_of_one_family_live_in_one_file():
    by_family: dict[str, set[str]] = {}
    for r in library():
        by_family.setdefault(r.family, set()).add(r.path)
    assert all(len(paths) == 1 for paths in by_family.values()), by_family


def _names_called(tree: ast.AST) -> set[str]:
    return {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }


def _bound_names(tree: ast.AST) -> set[str]:
    """Names bound by comprehensions inside an expression."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            bound |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    return bound


def _expressions(r):
    """(where-clause or attribute expression, kind) pairs of a rule's rewrite and where."""
    if r.where is not None:
        yield r.where.tree, "where"
    stack = list(r.rewrite)
    while stack:
        p = stack.pop()
        if isinstance(p, Op):
            for _, a in p.attrs:
                if isinstance(a, AttrExpr):
                    yield a.tree, "attribute"
            stack.extend(p.args)
        elif isinstance(p, Build):
            yield p.tree, "builder"


@pytest.mark.parametrize("r", library(), ids=lambda r: r.name)
def test_expressions_use_only_known_functions_and_bound_names(r):
    variables = set(r.variables()) | set(r.attr_variables())
    for tree, kind in _expressions(r):
        allowed_calls = set(FUNCTIONS) | (BUILDERS if kind == "builder" else set())
        unknown_calls = _names_called(tree) - allowed_calls
        assert not unknown_calls, (
            f"{r.name}: {kind} calls unknown functions {sorted(unknown_calls)}"
        )
        local = _bound_names(tree)
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        free = names - variables - local - KNOWN_NAMES - allowed_calls
        assert not free, f"{r.name}: {kind} uses unbound names {sorted(free)}"
