"""Explained optimization: what each applied rewrite did, how its rule was proved, and which
rewrite the numeric drift comes from (``graphopt optimize --report report.html``).

:func:`explain_optimization` takes the graphs of one run (the imported original, the graph the
rule search started from, the optimized graph) and the search's recorded checkpoints
(:func:`optimizer.search.base.recording`) and collects:

- one :class:`RewriteRecord` per trace step: rule, matched nodes, cost before and after,
  drawings of the matched region and its neighbourhood before and after;
- the proof of every applied rule (:mod:`optimizer.explain.proofs`);
- a :class:`DriftReport`: the chain of concrete graphs from the original to the optimized
  graph (:mod:`optimizer.explain.chain`: clean-up, then each replayed rewrite, or each
  equality-saturation call as one block, and the folds between), run on the numeric check's
  inputs, bisected for the link where the drift from the original crosses half of the final
  drift (:mod:`optimizer.explain.drift`). When that link is a block of several rewrites, the
  block is cut into segments at the values it left in place (:mod:`optimizer.explain.splice`)
  and the same bisection runs over the original-side graph with the segments put in one by
  one, naming the segment, and so the rewrites, behind the drift.

Everything here runs before the optimized model is written (the original's weights are read
lazily from its file), and the result holds only plain data and SVG text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optimizer.errors import GraphoptError
from optimizer.explain.chain import BLOCK, CLEANUP, STEP, Transition, build_chain
from optimizer.explain.drift import Bisection, DriftProbe, bisect
from optimizer.explain.graph_svg import ir_drawing, render_svg
from optimizer.explain.proofs import ProofInfo, proof_info
from optimizer.explain.splice import Segment, SpliceError, segments, splice
from optimizer.ir import Graph, Node
from optimizer.search.base import Checkpoint

__all__ = [
    "DriftReport",
    "OptimizationExplanation",
    "RewriteRecord",
    "SegmentRecord",
    "explain_optimization",
]

#: Chains up to this many links have every graph run (a drift figure per rewrite); longer ones
#: only the graphs the bisection needs.
FULL_SCAN_LINKS = 40
#: Steps (and block segments) drawn before and after (the rest are listed without drawings).
MAX_DRAWN_STEPS = 150
#: Graphs of up to this many nodes get an overview drawing.
OVERVIEW_NODES = 150


@dataclass
class SegmentRecord:
    """A part of a block's change (:class:`~optimizer.explain.splice.Segment`): the trace steps
    it is attributed to, its drawings, and the names of the nodes it replaced."""

    link: int
    number: int
    steps: list[int]
    rules: list[str]
    replaced: list[str]
    before_svg: str = ""
    after_svg: str = ""


@dataclass
class RewriteRecord:
    """One applied rewrite (a trace step) as the report shows it."""

    index: int
    rule: str
    nodes_matched: list[str]
    cost_before: float
    cost_after: float
    algorithm: str
    link: int | None = None
    kind: str = STEP
    segments: list[int] = field(default_factory=list)
    before_svg: str = ""
    after_svg: str = ""
    drawing_note: str = ""
    drift_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        keys = ("index", "rule", "nodes_matched", "cost_before", "cost_after", "algorithm",
                "link", "kind", "segments", "drift_after")  # fmt: skip
        return {k: getattr(self, k) for k in keys}


@dataclass
class DriftReport:
    """The drift bisection. ``total`` is the largest absolute output difference between the
    original and the optimized graph on the check's inputs; ``probes`` the drift measured
    after each link that ran, as ``(link, label, drift)``; the blame names a link, its trace
    steps, and, inside a block, a segment."""

    available: bool
    reason: str = ""
    total: float = 0.0
    threshold: float = 0.0
    links: list[str] = field(default_factory=list)
    probes: list[tuple[int, str, float]] = field(default_factory=list)
    blamed_link: int | None = None
    blamed_steps: list[int] = field(default_factory=list)
    blamed_rules: list[str] = field(default_factory=list)
    blamed_segment: int | None = None
    drift_before: float = 0.0
    drift_after: float = 0.0
    runs: int = 0
    note: str = ""

    @property
    def share(self) -> float:
        """The blamed link's (or segment's) increase of the drift, as a share of the total."""
        if self.blamed_link is None or not self.total or not math.isfinite(self.total):
            return 0.0
        return (self.drift_after - self.drift_before) / self.total

    @property
    def summary(self) -> str:
        """One sentence naming what the drift comes from."""
        if not self.available:
            return f"drift bisection unavailable: {self.reason}"
        if self.total == 0.0:
            return "no drift: the optimized graph computes the original's outputs exactly"
        if self.blamed_link is None:
            return f"total drift {self.total:.3g}; {self.note or 'no single rewrite crosses half'}"
        what = self.links[self.blamed_link]
        return (
            f"{what} moves the drift from {self.drift_before:.3g} to {self.drift_after:.3g} "
            f"({self.share:.0%} of the total {self.total:.3g})"
        )

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k != "links"}
        data["summary"] = self.summary
        data["share"] = self.share
        data["probes"] = [{"link": i, "label": lab, "drift": d} for i, lab, d in self.probes]
        return data


@dataclass
class OptimizationExplanation:
    """What :func:`explain_optimization` found (plain data and SVG text)."""

    rewrites: list[RewriteRecord]
    segments: list[SegmentRecord]
    proofs: dict[str, ProofInfo]
    drift: DriftReport
    links: list[dict[str, Any]]
    overview_before: str = ""
    overview_after: str = ""
    overview_note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "rewrites": [r.to_json() for r in self.rewrites],
            "segments": [
                {k: v for k, v in vars(s).items() if not k.endswith("_svg")} for s in self.segments
            ],
            "proofs": {k: p.to_json() for k, p in self.proofs.items()},
            "drift": self.drift.to_json(),
            "links": self.links,
        }


def explain_optimization(
    original: Graph,
    start: Graph,
    end: Graph,
    checkpoints: Sequence[Checkpoint],
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    device: str = "cpu",
    verify_budget_s: float | None = None,
    drift: bool = True,
) -> OptimizationExplanation:
    """Explain one run: ``original`` (as imported), ``start`` (the graph the search began with,
    after the clean-up passes), ``end`` (the optimized graph) and the search's ``checkpoints``.
    ``input_shapes`` and ``device`` are the numeric check's; ``verify_budget_s`` bounds the
    verification of rules the proof cache lacks; ``drift=False`` skips the bisection."""
    from optimizer.passes.rewrite import default_rules

    library = list(default_rules().rules)
    chain = build_chain(start, checkpoints, end, library)
    if original.key != start.key:
        chain.insert(0, Transition(CLEANUP, original, start, note="clean-up passes"))
    steps = [s for cp in checkpoints for s in cp.steps]
    records = [
        RewriteRecord(k, s.rule, list(s.nodes_matched), s.cost_before, s.cost_after, "")
        for k, s in enumerate(steps)
    ]
    seg_records: list[SegmentRecord] = []
    block_segments: dict[int, list[Segment]] = {}
    for i, link in enumerate(chain):
        for k in link.steps:
            records[k].link, records[k].kind, records[k].algorithm = i, link.kind, link.algorithm
        if link.kind == BLOCK:
            segs = segments(link.before, link.after)
            block_segments[i] = segs
            for j, seg in enumerate(segs):
                draw = len(seg_records) < MAX_DRAWN_STEPS
                seg_records.append(_segment_record(i, j, seg, link, steps, draw))
                for k in seg_records[-1].steps:
                    records[k].segments.append(len(seg_records) - 1)
    _draw_steps(chain, records)
    by_name = {r.name: r for r in library}
    used = [by_name[n] for n in dict.fromkeys(s.rule for s in steps) if n in by_name]
    proofs = proof_info(used, budget_s=verify_budget_s)
    labels = [_link_label(link, steps) for link in chain]
    if drift:
        report = _drift(original, chain, labels, block_segments, seg_records, input_shapes, device)
    else:
        report = DriftReport(False, "not requested", links=labels)
    for record in records:
        if record.link is not None and record.kind == STEP:
            record.drift_after = next((d for i, _, d in report.probes if i == record.link), None)
    before_svg, after_svg, note = _overview(original, end, chain, block_segments)
    links = [
        {"kind": link.kind, "steps": list(link.steps), "algorithm": link.algorithm,
         "label": labels[i], "note": link.note}
        for i, link in enumerate(chain)
    ]  # fmt: skip
    return OptimizationExplanation(
        records, seg_records, proofs, report, links, before_svg, after_svg, note
    )


# ------------------------------------------------------------------ records and drawings


def _names_of(graph: Graph, nodes: Sequence[Node]) -> list[str]:
    out = []
    for node in nodes:
        meta = graph.node_meta.get(node)
        out.append(meta.name if meta is not None and meta.name else f"{node.op}#{node.serial}")
    return out


def _segment_record(
    i: int, j: int, seg: Segment, link: Transition, steps: Sequence, draw: bool = True
) -> SegmentRecord:
    """The segment's record; its steps: the block's steps whose rule made one of its nodes
    or whose matched nodes include a node it replaced (drawn unless ``draw`` is false)."""
    made = {
        m.provenance
        for n in seg.nodes
        if (m := link.after.node_meta.get(n)) is not None and m.provenance
    }
    replaced = _names_of(link.before, seg.replaced)
    mine = [
        k for k in link.steps
        if steps[k].rule in made or set(steps[k].nodes_matched) & set(replaced)
    ]  # fmt: skip
    rules = list(dict.fromkeys(steps[k].rule for k in mine)) or sorted(made)
    record = SegmentRecord(i, j, mine, rules, replaced)
    if draw:
        before = ir_drawing(link.before, seg.replaced, style="matched")
        after = ir_drawing(link.after, seg.nodes, style="created")
        record.before_svg = render_svg(*before, title=f"segment {j + 1} before")
        record.after_svg = render_svg(*after, title=f"segment {j + 1} after")
    return record


def _draw_steps(chain: Sequence[Transition], records: list[RewriteRecord]) -> None:
    drawn = 0
    for link in chain:
        if link.kind != STEP:
            continue
        (k,) = link.steps
        record = records[k]
        if drawn >= MAX_DRAWN_STEPS:
            record.drawing_note = f"not drawn (the report draws the first {MAX_DRAWN_STEPS})"
            continue
        drawn += 1
        assert link.match is not None
        focus_after = set(link.created) | {v.node for v in link.results if not v.node.is_source}
        before = ir_drawing(link.before, link.match.nodes, style="matched")
        after = ir_drawing(link.after, focus_after, style="created")
        record.before_svg = render_svg(*before, title=f"rewrite {k + 1} before")
        record.after_svg = render_svg(*after, title=f"rewrite {k + 1} after")
    for record in records:
        if record.kind == BLOCK and not record.drawing_note:
            record.drawing_note = (
                "applied inside an equality-saturation block: see its segments"
                if record.segments
                else "applied inside an equality-saturation block (no segment of the result "
                "is attributed to it: an enabling or superseded step)"
            )


def _overview(
    original: Graph,
    end: Graph,
    chain: Sequence[Transition],
    block_segments: Mapping[int, list[Segment]],
) -> tuple[str, str, str]:
    """The whole graph before and after: the original's nodes that rewrites matched (nodes
    downstream of a rewrite are rebuilt, not rewritten, and are not marked), and the
    optimized graph's nodes that rules made."""
    big = max(len(original.nodes()), len(end.nodes()))
    if big > OVERVIEW_NODES:
        return "", "", f"graphs over {OVERVIEW_NODES} nodes are not drawn whole ({big} nodes)"
    matched: set[Node] = set()
    for link in chain:
        if link.match is not None:
            matched |= link.match.nodes
    for segs in block_segments.values():
        for seg in segs:
            matched.update(seg.replaced)
    made = [
        n
        for n in end.nodes()
        if (m := end.node_meta.get(n)) is not None and m.provenance and "fold" not in m.provenance
    ]
    before = ir_drawing(original, matched, style="matched", whole=True)
    after = ir_drawing(end, made, style="created", whole=True)
    return (
        render_svg(*before, title="original graph"),
        render_svg(*after, title="optimized graph"),
        "red: nodes of the original that a rewrite matched; green: nodes that rules made",
    )


def _link_label(link: Transition, steps: Sequence) -> str:
    if link.kind == STEP:
        (k,) = link.steps
        where = ", ".join(steps[k].nodes_matched)
        return f"rewrite {k + 1} ({steps[k].rule} at {where})"
    if link.kind == BLOCK:
        what = f"{link.algorithm} block"
        if link.steps:
            numbers = ", ".join(str(k + 1) for k in link.steps[:6])
            more = f" and {len(link.steps) - 6} more" if len(link.steps) > 6 else ""
            what += f" (rewrites {numbers}{more})"
        return f"{what}: {link.note}" if link.note else what
    return link.note or link.kind


# ------------------------------------------------------------------ drift


def _drift(
    original: Graph,
    chain: Sequence[Transition],
    labels: list[str],
    block_segments: dict[int, list[Segment]],
    seg_records: list[SegmentRecord],
    input_shapes,
    device: str,
) -> DriftReport:
    """Bisect the chain (module docstring), then the blamed block's segments."""
    if not chain:
        return DriftReport(True, total=0.0, links=labels)
    try:
        probe = DriftProbe(original, input_shapes=input_shapes, device=device)
    except GraphoptError as exc:
        return DriftReport(False, str(exc).splitlines()[0], links=labels)
    graphs = [original] + [link.after for link in chain]
    n = len(chain)
    try:
        known = {}
        if n <= FULL_SCAN_LINKS:
            known = {i: probe.drift(graphs[i]) for i in range(1, n + 1)}
        found = bisect(n, lambda i: probe.drift(graphs[i]), known=known)
    except GraphoptError as exc:
        return DriftReport(False, str(exc).splitlines()[0], links=labels)
    report = DriftReport(
        True, total=found.total, threshold=found.threshold, links=labels, runs=probe.runs
    )
    report.probes = [(i - 1, labels[i - 1], d) for i, d in sorted(found.measured.items()) if i > 0]
    if found.link is None:
        report.note = "the drift does not cross half of the total at any link"
        return report
    link_index = found.link - 1
    link = chain[link_index]
    report.blamed_link = link_index
    report.drift_before, report.drift_after = found.before, found.after
    report.blamed_steps = list(link.steps)
    if link.kind == STEP and link.match is not None:
        report.blamed_rules = [link.match.rule.name]
    elif link.kind == BLOCK and block_segments.get(link_index):
        _refine(report, probe, link, block_segments[link_index], seg_records, found, link_index)
    report.runs = probe.runs
    return report


def _refine(
    report: DriftReport,
    probe: DriftProbe,
    link: Transition,
    segs: list[Segment],
    seg_records: list[SegmentRecord],
    found: Bisection,
    link_index: int,
) -> None:
    """Bisect over the block's segments put into its input one by one."""
    records = [r for r in seg_records if r.link == link_index]
    try:
        inner = bisect(
            len(segs),
            lambda j: probe.drift(splice(link.before, segs[:j])),
            known={0: found.before},
            threshold=found.threshold,
        )
    except SpliceError as exc:
        report.note = f"the block's segments could not be separated ({exc})"
        return
    except GraphoptError as exc:
        report.note = f"the block's segments could not be run ({str(exc).splitlines()[0]})"
        return
    if inner.link is None:
        report.note = (
            "the block's segments, put in one by one, do not reproduce its drift; "
            "the block as a whole is named"
        )
        report.blamed_rules = list(dict.fromkeys(r for s in records for r in s.rules))
        return
    seg = records[inner.link - 1]
    report.blamed_segment = seg_records.index(seg)
    report.blamed_steps = list(seg.steps) or report.blamed_steps
    report.blamed_rules = list(seg.rules)
    report.drift_before, report.drift_after = inner.before, inner.after
    report.links[link_index] += f", segment {seg.number + 1} ({', '.join(seg.rules)})"
