"""Applying a match: build the rule's rewrite and splice it into the graph.

:func:`replacement` instantiates a rule's ``rewrite`` over a match's bindings
and checks that each new value can stand for the root it replaces (same
element type, same rank, same static dims). :func:`apply_match` then rebuilds
the graph with the roots replaced: names follow the values, graph outputs keep
their names, and every node the rewrite created carries the rule's name as
provenance. A rewrite never drops a node that must stay (random generators,
opaque custom ops): such an application is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from optimizer.ir import (
    REGISTRY,
    DType,
    Graph,
    ModelMeta,
    Node,
    NodeMeta,
    TensorType,
    Value,
    ValueType,
    transform,
)
from optimizer.rewrite.expr import evaluate, instantiate
from optimizer.rewrite.match import Match, context
from optimizer.rewrite.rule import AttrExpr, Op, Pattern

__all__ = ["apply_match", "exists_in", "new_nodes", "replacement", "replaces_type"]


def replaces_type(old: ValueType, new: ValueType) -> bool:
    """Whether a value typed ``new`` may replace one typed ``old``: the same element type, and
    when ``old``'s rank is known the same rank with equal dims wherever both are integers."""
    if not isinstance(old, TensorType):
        return new == old
    if not isinstance(new, TensorType):
        return False
    if old.dtype != DType.UNDEFINED and new.dtype != old.dtype:
        return False
    if old.shape is None:
        return True
    if new.shape is None or len(new.shape) != len(old.shape):
        return False
    return all(
        not (isinstance(a, int) and isinstance(b, int)) or a == b
        for a, b in zip(old.shape, new.shape, strict=True)
    )


def exists_in(node: Node, meta: ModelMeta) -> bool:
    """Whether the model can hold ``node``: its domain is imported and, for ONNX's domains,
    the op exists at the imported opset with this many inputs and these attributes (a rule
    must not emit Gelu into an opset-17 model, nor Split with a sizes input before opset 13)."""
    version = meta.opset(node.domain)
    if node.domain not in ("", "ai.onnx", "ai.onnx.ml"):
        return version is not None
    if node.domain == "ai.onnx.ml" and version is None:
        return False
    fits = REGISTRY.fits_signature(
        node.domain, node.op, version, len(node.inputs), (name for name, _ in node.attrs)
    )
    return fits is not False


def _drop_absent_attributes(roots: Sequence[Pattern], env: dict[str, Any]) -> tuple[Pattern, ...]:
    """The rewrite without keyword attributes whose value is None.

    A match binds an attribute variable to None when the node omits the
    attribute and its schema has no default (Conv's ``pads``, ``strides``):
    passing it on to the rewrite means leaving the attribute out again.
    """
    memo: dict[int, Pattern] = {}
    return tuple(_without_absent(r, env, memo) for r in roots)


def _without_absent(p: Pattern, env: dict[str, Any], memo: dict[int, Pattern]) -> Pattern:
    # A module function, not a nested one: a nested function that calls itself is a
    # reference cycle, which searches (with the cyclic collector paused) would keep.
    if not isinstance(p, Op):
        return p
    done = memo.get(id(p))
    if done is not None:
        return done
    attrs = []
    for name, a in p.attrs:
        if isinstance(a, AttrExpr):
            try:
                if evaluate(a.tree, env) is None:
                    continue
            except Exception:  # noqa: BLE001 - instantiate reports it
                pass
        attrs.append((name, a))
    args = tuple(_without_absent(x, env, memo) for x in p.args)
    out = dataclasses.replace(p, args=args, attrs=tuple(attrs))
    memo[id(p)] = out
    return out


def replacement(match: Match, *, opset: int | None = None) -> list[Value] | None:
    """The values that replace ``match.roots``, or None when the rewrite cannot be built for
    these bindings or would change a root's type (dtype, rank or a static dim)."""
    rewrite = match.rule.rewrite
    if any(v is None for v in match.attrs.values()):
        rewrite = _drop_absent_attributes(rewrite, {**match.attrs, **match.tensors})
    try:
        values = instantiate(rewrite, match.tensors, match.attrs, opset=opset)
    except Exception:  # noqa: BLE001 - RuleEvalError, or a type function refusing the inputs
        return None
    if len(values) != len(match.roots):
        return None
    for old, new in zip(match.roots, values, strict=True):
        if not replaces_type(old.type, new.type):
            return None
    return values


def new_nodes(values: Sequence[Value], existing: set[Node] | dict[Node, Any]) -> list[Node]:
    """Nodes that ``values`` reach and ``existing`` lacks, operands before users (sources
    excluded)."""
    order: list[Node] = []
    seen: set[Node] = set()
    for value in values:
        stack = [(value.node, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if node in seen or node in existing or node.is_source:
                continue
            seen.add(node)
            stack.append((node, True))
            stack.extend((v.node, False) for v in reversed(node.operands))
    return order


def apply_match(
    graph: Graph,
    match: Match,
    *,
    opset: int | None = None,
    values: Sequence[Value] | None = None,
) -> Graph | None:
    """``graph`` with the match's roots replaced by the rule's rewrite, or None when the rewrite
    does not apply (see :func:`replacement`), changes nothing, creates an op the model's opset
    lacks (see :func:`exists_in`), or would drop a node that must stay. ``values`` is a
    replacement already built by :func:`replacement`."""
    opset = opset if opset is not None else graph.meta.opset("")
    if values is None:
        values = replacement(match, opset=opset)
    if values is None:
        return None
    mapping = {old: new for old, new in zip(match.roots, values, strict=True) if new is not old}
    if not mapping:
        return None
    ctx = context(graph)
    created = new_nodes(list(mapping.values()), ctx.position)
    if not all(exists_in(node, graph.meta) for node in created):
        return None
    root_nodes = {old.node for old in mapping}

    def rewrite(node: Node, inputs: list[Value | None]) -> list[Value] | None:
        if node in root_nodes:
            return [mapping.get(v, v) for v in node.outputs]
        return None

    result = transform(graph, rewrite)
    if ctx.protected:
        live = set(result.nodes())
        if any(n not in live for n in ctx.protected):
            return None
    meta = dict(result.node_meta)
    for node in created:  # all live: they compute the roots' replacements
        if node not in meta:
            meta[node] = NodeMeta(provenance=match.rule.name)
    return dataclasses.replace(result, node_meta=meta)
