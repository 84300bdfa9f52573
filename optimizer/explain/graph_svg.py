"""Drawing graphs as self-contained SVG: a layered layout written for small DAGs.

No graphviz, no JavaScript, no external style: :func:`render_svg` returns an ``<svg>`` element
with every colour and font inline, so a report that embeds it opens offline. The layout is
Sugiyama's in its simplest form:

1. layers by longest path from the sources (inputs at the top);
2. an edge that spans several layers gets a virtual point in each layer it crosses, so that
   it bends around the nodes in between;
3. order within each layer by the barycentre of the neighbours in the layer above, then
   below, a few sweeps each way (fewer crossings);
4. x by position within the layer (layers centred), edges as smooth curves through their
   virtual points.

:func:`ir_drawing` turns part of an IR graph into :class:`DrawNode`/:class:`DrawEdge` lists:
the nodes in focus (what a rewrite matched or created), their neighbours one hop away, the
constants and graph inputs they read, and the graph outputs they produce.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from optimizer.ir import Graph, Node, Value

__all__ = ["DrawEdge", "DrawNode", "STYLES", "ir_drawing", "render_svg"]

#: Fill and stroke of each node style.
STYLES: dict[str, tuple[str, str]] = {
    "plain": ("#f4f6f8", "#8a96a3"),
    "context": ("#ffffff", "#b8c0c8"),
    "matched": ("#fde2e1", "#c8372d"),
    "created": ("#dcf3e1", "#23863a"),
    "io": ("#e8eefc", "#4060b0"),
    "const": ("#fbf6e6", "#b29531"),
}
#: Layout constants (pixels).
LAYER_GAP, NODE_GAP, NODE_H, CHAR_W, PAD = 64, 18, 34, 7.2, 16
#: Barycentre sweeps (each one down and one up).
SWEEPS = 4
#: Numbers the drawings of a process, so that their marker ids are unique within a page.
_DRAWINGS = itertools.count(1)


@dataclass(frozen=True)
class DrawNode:
    """A box: ``label`` in bold, ``sublabel`` below it, ``tooltip`` on hover, ``style`` a key
    of :data:`STYLES`."""

    id: str
    label: str
    sublabel: str = ""
    tooltip: str = ""
    style: str = "plain"


@dataclass(frozen=True)
class DrawEdge:
    """An arrow from node ``src`` to node ``dst``."""

    src: str
    dst: str


def _layers(ids: Sequence[str], edges: Sequence[DrawEdge]) -> dict[str, int]:
    preds: dict[str, list[str]] = {i: [] for i in ids}
    for e in edges:
        preds[e.dst].append(e.src)
    layer: dict[str, int] = {}
    for i in ids:  # ids come in topological order
        layer[i] = 1 + max((layer[p] for p in preds[i] if p in layer), default=-1)
    return layer


def _topological(ids: Sequence[str], edges: Sequence[DrawEdge]) -> list[str]:
    """``ids`` in an order where every edge goes forward (input order kept where possible)."""
    succ: dict[str, list[str]] = {i: [] for i in ids}
    indeg = dict.fromkeys(ids, 0)
    for e in edges:
        succ[e.src].append(e.dst)
        indeg[e.dst] += 1
    rank = {i: k for k, i in enumerate(ids)}
    ready = sorted((i for i in ids if indeg[i] == 0), key=rank.__getitem__)
    out: list[str] = []
    while ready:
        i = ready.pop(0)
        out.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(j)
                ready.sort(key=rank.__getitem__)
    if len(out) != len(ids):
        raise ValueError("the drawing's edges form a cycle")
    return out


def layout(
    nodes: Sequence[DrawNode], edges: Sequence[DrawEdge]
) -> tuple[dict[str, tuple[float, float, float]], list[list[tuple[float, float]]], float, float]:
    """Positions: ``{id: (x_centre, y_top, width)}``, each edge's points, and the canvas size."""
    known = {n.id for n in nodes}
    edges = [e for e in edges if e.src in known and e.dst in known and e.src != e.dst]
    order = _topological([n.id for n in nodes], edges)
    layer = _layers(order, edges)
    width = {n.id: max(60.0, CHAR_W * max(len(n.label), len(n.sublabel)) + 20) for n in nodes}
    # Virtual points for long edges.
    rows: dict[int, list[str]] = {}
    for i in order:
        rows.setdefault(layer[i], []).append(i)
    chains: list[list[str]] = []
    up: dict[str, list[str]] = {i: [] for i in order}
    down: dict[str, list[str]] = {i: [] for i in order}
    for k, e in enumerate(edges):
        chain = [e.src]
        for level in range(layer[e.src] + 1, layer[e.dst]):
            v = f"\0{k}:{level}"
            rows.setdefault(level, []).append(v)
            width[v] = 8.0
            up[v], down[v] = [], []
            chain.append(v)
        chain.append(e.dst)
        for a, b in zip(chain, chain[1:]):
            down[a].append(b)
            up[b].append(a)
        chains.append(chain)
    levels = sorted(rows)
    pos = {v: float(k) for level in levels for k, v in enumerate(rows[level])}

    def sweep(sequence: Iterable[int], neighbours: Mapping[str, list[str]]) -> None:
        for level in sequence:
            row = rows[level]
            centre = {
                v: (sum(pos[u] for u in neighbours[v]) / len(neighbours[v]))
                if neighbours[v] else pos[v]
                for v in row
            }  # fmt: skip
            row.sort(key=lambda v: (centre[v], pos[v]))
            for k, v in enumerate(row):
                pos[v] = float(k)

    for _ in range(SWEEPS):
        sweep(levels[1:], up)
        sweep(reversed(levels[:-1]), down)
    row_width = {
        level: sum(width[v] for v in rows[level]) + NODE_GAP * (len(rows[level]) - 1)
        for level in levels
    }
    canvas_w = max(row_width.values(), default=0.0) + 2 * PAD
    place: dict[str, tuple[float, float, float]] = {}
    for level in levels:
        x = (canvas_w - row_width[level]) / 2
        y = PAD + level * (NODE_H + LAYER_GAP)
        for v in rows[level]:
            place[v] = (x + width[v] / 2, y, width[v])
            x += width[v] + NODE_GAP
    paths = []
    for chain in chains:
        points = [(place[chain[0]][0], place[chain[0]][1] + NODE_H)]
        for v in chain[1:-1]:
            points.append((place[v][0], place[v][1] + NODE_H / 2))
        points.append((place[chain[-1]][0], place[chain[-1]][1]))
        paths.append(points)
    canvas_h = PAD * 2 + (len(levels) * (NODE_H + LAYER_GAP) - LAYER_GAP if levels else 0)
    real = {k: v for k, v in place.items() if not k.startswith("\0")}
    return real, paths, canvas_w, canvas_h


def _curve(points: Sequence[tuple[float, float]]) -> str:
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        mid = (y0 + y1) / 2
        parts.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(parts)


def render_svg(nodes: Sequence[DrawNode], edges: Sequence[DrawEdge], *, title: str = "") -> str:
    """An inline ``<svg>`` of the graph (see the module docstring)."""
    place, paths, w, h = layout(nodes, edges)
    esc = html.escape
    arrow = f"arrow{next(_DRAWINGS)}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{w:.0f}" '
        f'height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}" role="img" '
        f'aria-label="{esc(title or "graph")}" font-family="sans-serif">',
        f'<defs><marker id="{arrow}" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#6b7682"/></marker></defs>',
    ]
    if title:
        out.append(f"<title>{esc(title)}</title>")
    for points in paths:
        out.append(
            f'<path d="{_curve(points)}" fill="none" stroke="#6b7682" stroke-width="1.2" '
            f'marker-end="url(#{arrow})"/>'
        )
    for node in nodes:
        x, y, width = place[node.id]
        fill, stroke = STYLES.get(node.style, STYLES["plain"])
        thick = 2.2 if node.style in ("matched", "created") else 1.2
        out.append(f'<g class="node {esc(node.style)}" data-id="{esc(node.id)}">')
        if node.tooltip:
            out.append(f"<title>{esc(node.tooltip)}</title>")
        out.append(
            f'<rect x="{x - width / 2:.1f}" y="{y:.1f}" width="{width:.1f}" height="{NODE_H}" '
            f'rx="6" fill="{fill}" stroke="{stroke}" stroke-width="{thick}"/>'
        )
        if node.sublabel:
            out.append(
                f'<text x="{x:.1f}" y="{y + 14:.1f}" text-anchor="middle" font-size="12" '
                f'font-weight="bold" fill="#1d2630">{esc(node.label)}</text>'
                f'<text x="{x:.1f}" y="{y + 27:.1f}" text-anchor="middle" font-size="10" '
                f'fill="#4d5965">{esc(node.sublabel)}</text>'
            )
        else:
            out.append(
                f'<text x="{x:.1f}" y="{y + 21:.1f}" text-anchor="middle" font-size="12" '
                f'font-weight="bold" fill="#1d2630">{esc(node.label)}</text>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------ IR graphs


def _type_text(value: Value) -> str:
    return str(value.type)


def _constant_text(node: Node) -> str:
    data = node.attr("value")
    if data.size <= 4:
        try:
            values = np.asarray(data.numpy()).ravel().tolist()
            return ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values)
        except Exception:  # noqa: BLE001 - a label must never fail the report
            pass
    return _type_text(node.outputs[0])


def ir_drawing(
    graph: Graph,
    focus: Iterable[Node] = (),
    *,
    style: str = "matched",
    hops: int = 1,
    whole: bool = False,
) -> tuple[list[DrawNode], list[DrawEdge]]:
    """Nodes and edges of ``graph`` around ``focus`` (drawn in ``style``), with neighbours up to
    ``hops`` away; ``whole`` draws every node (constants left out unless in focus)."""
    order = graph.nodes(include_sources=True)
    position = {n: i for i, n in enumerate(order)}
    focus_set = {n for n in focus if n in position}
    consumers = graph.consumers()
    if whole:
        shown = {n for n in order if not n.is_constant} | focus_set
    else:
        shown = set(focus_set)
        frontier = set(focus_set)
        for _ in range(hops):
            nxt: set[Node] = set()
            for node in frontier:
                nxt.update(v.node for v in node.operands)
                for value in node.outputs:
                    nxt.update(consumers.get(value, ()))
            nxt -= shown
            shown |= {n for n in nxt if not n.is_constant}
            frontier = nxt
        # Constants and inputs read by the focus nodes are part of what a rule matched.
        shown |= {v.node for n in focus_set for v in n.operands if v.node.is_source}
    ids = {n: f"n{position[n]}" for n in shown}
    names = graph.value_names
    draw: list[DrawNode] = []
    edges: list[DrawEdge] = []
    for node in sorted(shown, key=position.__getitem__):
        meta = graph.node_meta.get(node)
        if node.is_input:
            name = node.outputs[0].input_name
            item = DrawNode(ids[node], name, _type_text(node.outputs[0]),
                            f"input {name}: {_type_text(node.outputs[0])}", "io")  # fmt: skip
        elif node.is_constant:
            label = names.get(node.outputs[0]) or "const"
            item = DrawNode(ids[node], _short(label), _short(_constant_text(node)),
                            f"constant {_type_text(node.outputs[0])}", "const")  # fmt: skip
        else:
            sub = meta.name if meta is not None and meta.name else ""
            if not sub and meta is not None and meta.provenance:
                sub = f"by {meta.provenance}"
            outs = ", ".join(f"{names.get(v, '')} {_type_text(v)}".strip() for v in node.outputs)
            tip = f"{node.op}{' ' + meta.name if meta and meta.name else ''} -> {outs}"
            if meta is not None and meta.provenance:
                tip += f" (made by {meta.provenance})"
            kind = style if node in focus_set else ("plain" if whole else "context")
            item = DrawNode(ids[node], node.op, _short(sub), tip, kind)
        draw.append(item)
        for value in node.operands:
            if value.node in ids:
                edges.append(DrawEdge(ids[value.node], ids[node]))
    for k, (value, name) in enumerate(zip(graph.outputs, graph.output_names, strict=True)):
        if value.node in ids:
            out_id = f"out{k}"
            draw.append(DrawNode(out_id, name, _type_text(value), f"output {name}", "io"))
            edges.append(DrawEdge(ids[value.node], out_id))
    return draw, list(dict.fromkeys(edges))


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
