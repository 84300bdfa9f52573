"""Localizing what changed between two graphs of one model: segments, and splicing them.

A block of rewrites (an equality-saturation call, or a search whose steps could not be
replayed) turns graph ``A`` into graph ``B`` at once. Most values survive it: the IR is
hash-consed, so an unchanged node *is* the same object in both graphs, and names follow the
values a rewrite puts in place of a root, so a replaced value's successor carries its name.
:func:`segments` cuts ``B``'s new computation at those shared values:

- a value of ``B`` *corresponds* to a value of ``A`` when it is the same object, or when both
  carry the same name (value or graph-output name) with the same type;
- the nodes of ``B`` that ``A`` lacks form segments: two of them are in one segment when one
  reads a value of the other that corresponds to nothing in ``A``. Every value that enters or
  leaves a segment therefore corresponds to a value of ``A`` (or is a constant);
- a segment that only re-applies ``A``'s operation to corresponding inputs (a node rebuilt
  because something upstream changed) is left out: it changes nothing by itself.

:func:`splice` builds ``A`` with some segments put in: each segment's outputs replace the
``A`` values they correspond to, computed by the segment's nodes from the (spliced) ``A``
values its inputs correspond to. With every segment in, the result computes what ``B``
computes; with one, the effect of that part of the rewrite alone. A segment whose inputs
depend, in ``A``, on its own outputs cannot be put in alone (:class:`SpliceError`).
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.ir import Graph, Node, Value
from optimizer.ir.graph import rename_after
from optimizer.rewrite.apply import replaces_type

__all__ = ["Segment", "SpliceError", "correspondence", "segments", "splice"]


class SpliceError(Exception):
    """A set of segments cannot be spliced into ``A`` (a dependency cycle)."""


@dataclass(frozen=True, eq=False)
class Segment:
    """Nodes of ``B`` (topological order) that compute ``outputs`` from ``inputs``; ``outputs``
    map each value leaving the segment to the ``A`` value it replaces, ``inputs`` each value
    entering it to the ``A`` value it reads (None for constants ``A`` lacks). ``replaced``
    are the ``A`` nodes the segment stands for (from its outputs back to its inputs)."""

    nodes: tuple[Node, ...]
    outputs: dict[Value, Value]
    inputs: dict[Value, Value | None]
    replaced: tuple[Node, ...]


def _names(graph: Graph) -> dict[str, Value]:
    by_name: dict[str, Value] = {}
    for value, name in graph.value_names.items():
        by_name.setdefault(name, value)
    for value, name in zip(graph.outputs, graph.output_names, strict=True):
        by_name[name] = value
    for value in graph.inputs:
        if value.node.is_input:
            by_name.setdefault(value.input_name, value)
    return by_name


def correspondence(a: Graph, b: Graph) -> dict[Value, Value]:
    """For each value of ``b`` that stands for a value of ``a``: that value (see module doc)."""
    in_a = {v for n in a.nodes(include_sources=True) for v in n.outputs}
    a_names = _names(a)
    corr: dict[Value, Value] = {}
    named = dict(b.value_names)
    for value, name in zip(b.outputs, b.output_names, strict=True):
        named[value] = name
    for node in b.nodes(include_sources=True):
        for value in node.outputs:
            if value in in_a:
                corr[value] = value
                continue
            name = named.get(value)
            other = a_names.get(name) if name else None
            if other is not None and replaces_type(other.type, value.type):
                corr[value] = other
    return corr


def segments(a: Graph, b: Graph) -> list[Segment]:
    """The segments of ``b``'s new computation, in ``b``'s topological order (module doc)."""
    corr = correspondence(a, b)
    in_a = set(a.nodes(include_sources=True))
    order = b.nodes()
    new = [n for n in order if n not in in_a]
    parent = {n: n for n in new}

    def find(n: Node) -> Node:
        while parent[n] is not n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for node in new:
        for operand in node.operands:
            if operand.node in parent and operand not in corr:
                parent[find(node)] = find(operand.node)
    groups: dict[Node, list[Node]] = {}
    for node in new:
        groups.setdefault(find(node), []).append(node)
    readers = b.consumers()
    outputs_of_b = set(b.outputs)
    result = []
    for members in groups.values():
        inside = set(members)
        outs: dict[Value, Value] = {}
        ins: dict[Value, Value | None] = {}
        for node in members:
            for value in node.outputs:
                used_outside = value in outputs_of_b or any(
                    n not in inside for n in readers.get(value, ())
                )
                if used_outside and value in corr:
                    outs[value] = corr[value]
            for operand in node.operands:
                if operand.node not in inside:
                    ins[operand] = corr.get(operand)
        if not outs or _is_copy(members, outs, ins):
            continue
        stop = {v for v in ins.values() if v is not None}
        replaced = _between(a, list(outs.values()), stop)
        result.append(Segment(tuple(members), outs, ins, replaced))
    return result


def _is_copy(members: list[Node], outs: dict[Value, Value], ins: dict[Value, Value | None]):
    """Whether the segment is one node re-applying ``A``'s operation to corresponding inputs."""
    if len(members) != 1:
        return False
    (node,) = members
    originals = {v.node for v in outs.values()}
    if len(originals) != 1:
        return False
    (old,) = originals
    if (old.op, old.domain, old.attrs) != (node.op, node.domain, node.attrs):
        return False
    if len(old.inputs) != len(node.inputs):
        return False
    for new_in, old_in in zip(node.inputs, old.inputs, strict=True):
        if new_in is None or old_in is None:
            if new_in is not old_in:
                return False
        elif ins.get(new_in, new_in) is not old_in:
            return False
    return all(outs.get(v, old.outputs[v.index]) is old.outputs[v.index] for v in node.outputs)


def _between(a: Graph, tops: list[Value], stop: set[Value]) -> tuple[Node, ...]:
    """Nodes of ``a`` that compute ``tops`` from ``stop`` (walking back, stopping there)."""
    seen: set[Node] = set()
    work = [v for v in tops if v not in stop]
    while work:
        value = work.pop()
        node = value.node
        if node in seen or node.is_source:
            continue
        seen.add(node)
        work.extend(v for v in node.operands if v not in stop)
    position = {n: i for i, n in enumerate(a.nodes())}
    return tuple(sorted(seen, key=lambda n: position.get(n, -1)))


def splice(a: Graph, chosen: list[Segment]) -> Graph:
    """``a`` with the ``chosen`` segments put in (module doc); raises :class:`SpliceError`."""
    replaced_by: dict[Value, tuple[Segment, Value]] = {}
    for seg in chosen:
        for b_value, a_value in seg.outputs.items():
            replaced_by[a_value] = (seg, b_value)
    inside = {n: seg for seg in chosen for n in seg.nodes}
    done: dict[tuple[str, Value], Value] = {}
    rebuilt: dict[tuple[str, Node], Node] = {}

    def deps(key: tuple[str, Value]) -> list[tuple[str, Value]]:
        side, value = key
        if side == "a":
            if value in replaced_by:
                return [("b", replaced_by[value][1])]
            return [("a", v) for v in value.node.operands]
        if value.node in inside:
            return [("b", v) for v in value.node.operands]
        seg = next(s for s in chosen if value in s.inputs and value.node not in s.nodes)
        target = seg.inputs[value]
        return [] if target is None else [("a", target)]

    def build(key: tuple[str, Value]) -> Value:
        side, value = key
        if side == "a" and value in replaced_by:
            return done[("b", replaced_by[value][1])]
        if side == "b" and value.node not in inside:
            seg = next(s for s in chosen if value in s.inputs)
            target = seg.inputs[value]
            return value if target is None else done[("a", target)]
        node = value.node
        if node.is_source:
            return value
        tag = (side, node)
        if tag not in rebuilt:
            ins = [None if v is None else done[(side, v)] for v in node.inputs]
            caps = {name: done[(side, v)] for name, v in node.captures}
            same = all(x is y for x, y in zip(ins, node.inputs, strict=True)) and all(
                caps[n] is v for n, v in node.captures
            )
            rebuilt[tag] = node if same else node.with_inputs(ins, caps)
        return rebuilt[tag].outputs[value.index]

    # Iterative post-order (graphs can be deeper than Python's recursion limit); a key met
    # again while its dependencies are being built is a cycle.
    for root in a.outputs:
        stack = [(("a", root), False)]
        active: set[tuple[str, Value]] = set()
        while stack:
            key, expanded = stack.pop()
            if key in done:
                continue
            if expanded:
                active.discard(key)
                done[key] = build(key)
                continue
            if key in active:
                raise SpliceError("a segment reads a value that depends on its own result")
            active.add(key)
            stack.append((key, True))
            for dep in deps(key):
                if dep not in done:
                    if dep in active:
                        raise SpliceError("a segment reads a value that depends on its own result")
                    stack.append((dep, False))
    mapping = {value: done[("a", value)] for (side, value) in done if side == "a"}
    meta = dict(a.node_meta)
    for (side, node), new in rebuilt.items():
        if new is not node and side == "a" and node in meta and new not in meta:
            meta[new] = meta[node]
    return rename_after(a, mapping, meta)
