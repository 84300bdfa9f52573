"""Rules as data: patterns, preconditions and replacements parsed from ``rules/*.rules``.

A rule file holds one family. Each rule reads like the maths::

    rule mul-distributes-over-add:  # x*z + y*z = (x+y)*z saves a multiplication
        match: Add(Mul(x, z), Mul(y, z))
        rewrite: Mul(Add(x, y), z)

    rule merge-matmuls-sharing-input:  # two MatMuls of one x run as one over [w1|w2]
        match:
            y1 = MatMul(x, w1)
            y2 = MatMul(x, w2)
        where: is_const(w1) and is_const(w2) and rank(w1) == 2 and rank(w2) == 2
        rewrite:
            y = MatMul(x, Concat(w1, w2, axis=1))
            y1, y2 = Split(y, ints(dim(w1, 1), dim(w2, 1)), axis=-1)

Sections are Python syntax parsed with :mod:`ast` (never evaluated as code):

- ``match``: calls of capitalised names are ops, lower-case names are tensor
  variables (a repeated name must bind the same value), ``_`` matches anything,
  a number matches a constant whose elements all equal it. Keyword arguments
  constrain attributes: a name binds an attribute variable, a literal must be
  equal. Attributes a pattern does not mention must be absent or default.
  Several statements form a multi-output pattern; their targets are the
  rule's outputs.
- ``where``: a boolean expression over the bindings (see :data:`FUNCTIONS`).
- ``rewrite``: the same calls build new nodes; keyword values are expressions;
  ``ints(...)``, ``floats(...)`` and ``scalar(v, like=x)`` build constants. It
  must bind every output the match names.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

#: Default rule folder: ``rules/`` at the repository root, or inside the installed package.
_PACKAGE_RULES = Path(__file__).resolve().parent.parent / "rules"
_REPO_RULES = Path(__file__).resolve().parent.parent.parent / "rules"


class RuleSyntaxError(ValueError):
    """A rule file is malformed; the message names file, line and rule."""


# ------------------------------------------------------------------ patterns


@dataclass(frozen=True)
class Var:
    """A tensor variable (``_`` matches anything without binding)."""

    name: str


@dataclass(frozen=True)
class Literal:
    """In a match: a constant whose every element equals ``value``."""

    value: float


@dataclass(frozen=True)
class AttrVar:
    """An attribute variable bound by a match."""

    name: str


@dataclass(frozen=True)
class AttrExpr:
    """An attribute value: a literal in a match, an expression in a rewrite."""

    source: str
    tree: ast.expr = field(compare=False, repr=False)


@dataclass(frozen=True)
class Op:
    """An op applied to argument patterns; ``index`` picks one output of a multi-output call.

    ``call`` identifies the call site, so that outputs of one multi-output
    statement share one node.
    """

    op: str
    args: tuple[Pattern, ...]
    attrs: tuple[tuple[str, AttrVar | AttrExpr], ...] = ()
    domain: str = ""
    index: int = 0
    call: int = 0
    #: Outputs of a multi-output statement (``a, _, c = Split(...)``: 3), so that a node is
    #: built with every output even when an ``_`` target is not read; 0 when not given.
    outputs: int = 0


@dataclass(frozen=True)
class Build:
    """In a rewrite: a constant built by a function (``ints``, ``floats``, ``scalar``)."""

    source: str
    tree: ast.expr = field(compare=False, repr=False)


Pattern = Var | Literal | Op | Build


@dataclass(frozen=True)
class Rule:
    """One substitution: match -> rewrite under ``where``."""

    name: str
    family: str
    comment: str
    outputs: tuple[str, ...]
    match: tuple[Pattern, ...]
    rewrite: tuple[Pattern, ...]
    where: AttrExpr | None
    source: str
    path: str = ""
    line: int = 0

    @property
    def digest(self) -> str:
        """Content hash of the rule's text (verification results are cached by it)."""
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def variables(self) -> list[str]:
        """Tensor variables of the match, in order of first appearance."""
        seen: list[str] = []

        def walk(p: Pattern) -> None:
            if isinstance(p, Var) and p.name != "_" and p.name not in seen:
                seen.append(p.name)
            elif isinstance(p, Op):
                for a in p.args:
                    walk(a)

        for root in self.match:
            walk(root)
        return seen

    def attr_variables(self) -> list[str]:
        """Attribute variables of the match, in order of first appearance."""
        seen: list[str] = []

        def walk(p: Pattern) -> None:
            if isinstance(p, Op):
                for _, a in p.attrs:
                    if isinstance(a, AttrVar) and a.name not in seen:
                        seen.append(a.name)
                for a in p.args:
                    walk(a)

        for root in self.match:
            walk(root)
        return seen


# ------------------------------------------------------------------ parsing

_RULE_HEADER = re.compile(r"^rule\s+([a-z0-9]+(?:-[a-z0-9]+)*)\s*:\s*(?:#\s*(.*))?$")
_SECTION = re.compile(r"^\s+(match|where|rewrite)\s*:\s*(.*)$")


def parse_rules(text: str, *, family: str, path: str = "") -> list[Rule]:
    """Parse the text of one rule file."""
    rules: list[Rule] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        header = _RULE_HEADER.match(line.rstrip())
        if header is None:
            raise RuleSyntaxError(
                f"{path}:{i + 1}: expected 'rule kebab-name:  # comment', got {line!r}"
            )
        name, comment = header.group(1), (header.group(2) or "").strip()
        if not comment:
            raise RuleSyntaxError(f"{path}:{i + 1}: rule {name} needs a one-line '# comment'")
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i][:1].isspace()):
            body.append(lines[i])
            i += 1
        source = "\n".join(lines[start:i]).strip()
        sections = _sections(body, path, start + 2, name)
        rules.append(_build_rule(name, family, comment, sections, source, path, start + 1))
    names = [r.name for r in rules]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuleSyntaxError(f"{path}: duplicate rule names {sorted(dupes)}")
    return rules


def _sections(body: list[str], path: str, first_line: int, name: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current = None
    for offset, raw in enumerate(body):
        text = raw.split("#", 1)[0].rstrip() if not raw.strip().startswith("#") else ""
        if not text.strip():
            continue
        found = _SECTION.match(text)
        if found:
            current = found.group(1)
            if current in sections:
                raise RuleSyntaxError(
                    f"{path}:{first_line + offset}: {name}: two '{current}' sections"
                )
            sections[current] = [found.group(2)] if found.group(2).strip() else []
        elif current is None:
            raise RuleSyntaxError(f"{path}:{first_line + offset}: {name}: text outside a section")
        else:
            sections[current].append(text.strip())
    for needed in ("match", "rewrite"):
        if needed not in sections:
            raise RuleSyntaxError(f"{path}: rule {name} has no '{needed}' section")
    return {k: "\n".join(v) for k, v in sections.items()}


class _PatternBuilder:
    """Turns parsed statements into patterns, resolving let-bound names."""

    def __init__(self, rule: str, side: str) -> None:
        self.rule = rule
        self.side = side
        self.env: dict[str, Pattern] = {}
        self.calls = 0

    def fail(self, node: ast.AST, message: str) -> RuleSyntaxError:
        return RuleSyntaxError(f"rule {self.rule} ({self.side}): {message}: {ast.unparse(node)!r}")

    def expr(self, node: ast.expr) -> Pattern:
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if self.side == "rewrite" and node.id != "_":
                return Var(node.id)
            return Var(node.id)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            if self.side == "rewrite":
                raise self.fail(node, "write constants in a rewrite as scalar(v, like=x)")
            return Literal(float(node.value))
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
        ):
            return Literal(-float(node.operand.value))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node, 0)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            return self.call(node, 0)
        raise self.fail(node, "not a pattern")

    def call(
        self, node: ast.Call, index: int, call_id: int | None = None, outputs: int = 0
    ) -> Pattern:
        name, domain = _op_name(node.func)
        if name is None:
            raise self.fail(node, "calls must name an op")
        if not name[0].isupper():
            if self.side == "rewrite" and name in BUILDERS:
                return Build(ast.unparse(node), node)
            raise self.fail(node, f"unknown function {name!r}")
        if call_id is None:
            self.calls += 1
            call_id = self.calls
        args = tuple(self.expr(a) for a in node.args)
        attrs = []
        for kw in node.keywords:
            if kw.arg is None:
                raise self.fail(node, "**kwargs are not patterns")
            if self.side == "match" and isinstance(kw.value, ast.Name):
                attrs.append((kw.arg, AttrVar(kw.value.id)))
            else:
                attrs.append((kw.arg, AttrExpr(ast.unparse(kw.value), kw.value)))
        ordered = tuple(sorted(attrs, key=lambda a: a[0]))
        return Op(name, args, ordered, domain, index, call_id, outputs)

    def statement(self, stmt: ast.stmt) -> list[str]:
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
            raise self.fail(stmt, "expected 'name = Op(...)' or 'a, b = Op(...)'")
        target = stmt.targets[0]
        if isinstance(target, ast.Name):
            self.env[target.id] = self.expr(stmt.value)
            return [target.id]
        if isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Call):
            names = []
            self.calls += 1
            call_id = self.calls  # one node for all targets, however many calls the args add
            for k, elt in enumerate(target.elts):
                if not isinstance(elt, ast.Name):
                    raise self.fail(stmt, "targets must be names")
                self.env[elt.id] = self.call(stmt.value, k, call_id, len(target.elts))
                names.append(elt.id)
            return names
        raise self.fail(stmt, "unsupported assignment")


def _op_name(func: ast.expr) -> tuple[str | None, str]:
    if isinstance(func, ast.Name):
        return func.id, ""
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.attr, {"ms": "com.microsoft"}.get(func.value.id, func.value.id)
    return None, ""


def _parse_side(text: str, rule: str, side: str) -> tuple[list[str], list[Pattern]]:
    try:
        tree = ast.parse(text.strip(), mode="exec")
    except SyntaxError as exc:
        raise RuleSyntaxError(f"rule {rule} ({side}): {exc.msg} in {text.strip()!r}") from None
    builder = _PatternBuilder(rule, side)
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
        return ["out"], [builder.expr(tree.body[0].value)]
    names: list[str] = []
    for stmt in tree.body:
        names.extend(builder.statement(stmt))
    return names, [builder.env[n] for n in names]


def _build_rule(name, family, comment, sections, source, path, line) -> Rule:
    match_names, match = _parse_side(sections["match"], name, "match")
    rewrite_names, rewrite_all = _parse_side(sections["rewrite"], name, "rewrite")
    outputs = tuple(match_names)
    if match_names == ["out"]:
        if rewrite_names != ["out"] and "out" not in rewrite_names:
            raise RuleSyntaxError(
                f"rule {name}: a one-expression match needs a one-expression rewrite"
            )
        rewrite = (rewrite_all[rewrite_names.index("out")],)
    else:
        env = dict(zip(rewrite_names, rewrite_all))
        missing = [n for n in outputs if n not in env]
        if missing:
            raise RuleSyntaxError(f"rule {name}: rewrite does not bind {missing}")
        rewrite = tuple(env[n] for n in outputs)
    where = None
    if "where" in sections:
        text = sections["where"].strip().replace("\n", " ")
        try:
            tree = ast.parse(text, mode="eval").body
        except SyntaxError as exc:
            raise RuleSyntaxError(f"rule {name} (where): {exc.msg} in {text!r}") from None
        where = AttrExpr(text, tree)
    rule = Rule(name, family, comment, outputs, tuple(match), rewrite, where, source, path, line)
    _check_rewrite_variables(rule)
    return rule


def _check_rewrite_variables(rule: Rule) -> None:
    known = set(rule.variables())

    def walk(p: Pattern) -> None:
        if isinstance(p, Var) and p.name not in known:
            raise RuleSyntaxError(
                f"rule {rule.name}: rewrite uses {p.name!r}, which match never binds"
            )
        if isinstance(p, Op):
            for a in p.args:
                walk(a)

    for root in rule.rewrite:
        walk(root)


#: Functions a rewrite may call to build constants.
BUILDERS = frozenset({"ints", "floats", "scalar"})


def rules_dir() -> Path:
    """The folder holding the shipped rule files."""
    # An installed package carries its own copy; a source checkout reads rules/ directly.
    return _PACKAGE_RULES if _PACKAGE_RULES.is_dir() else _REPO_RULES


def load_rules(folder: Path | None = None) -> list[Rule]:
    """Every rule in ``folder`` (default: the shipped library), family = file stem."""
    folder = folder or rules_dir()
    rules: list[Rule] = []
    for path in sorted(folder.glob("**/*.rules")):
        rules.extend(parse_rules(path.read_text(), family=path.stem, path=str(path)))
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RuleSyntaxError(f"rule names must be unique across files: {dupes}")
    return rules
