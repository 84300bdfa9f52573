"""Explained optimization without a browser: the replayed chain of graphs, segments and
splicing, the drift bisection, proof look-ups and the SVG layout.

The model (``rewrite_models.lossy_model``) gets exact rewrites (relu-relu, transposes) and one
that is lossy in float32 (``(x + 4096) - 4096`` reassociated); the bisection must name it,
whichever search made it.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from rewrite_models import LOSSY_RULE, MAX_DRIFT, lossy_model

from optimizer import onnx_io
from optimizer.api import OptimizeOptions, optimize_file
from optimizer.explain.chain import BLOCK, STEP, build_chain
from optimizer.explain.drift import DriftProbe, bisect, max_abs_difference
from optimizer.explain.graph_svg import DrawEdge, DrawNode, ir_drawing, layout, render_svg
from optimizer.explain.proofs import proof_info
from optimizer.explain.rewrites import explain_optimization
from optimizer.explain.splice import segments, splice
from optimizer.passes.rewrite import default_rules
from optimizer.search import algorithm
from optimizer.search.base import recording


@pytest.fixture(autouse=True)
def _no_verification(tmp_path, monkeypatch):
    """An empty proof cache, and no time to verify: reports say "not re-proved"."""
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("optimizer.explain.proofs.VERIFY_BUDGET_S", 0.0)


def _explained(tmp_path, search: str):
    src = tmp_path / "lossy.onnx"
    onnx.save(lossy_model(), src)
    seen = {}

    def hook(original, cleaned, rewritten):
        seen["graphs"] = (original, cleaned, rewritten)
        return explain_optimization(original, cleaned, rewritten, checkpoints)

    with recording() as checkpoints:
        report = optimize_file(
            src, tmp_path / "out.onnx", OptimizeOptions(search=search, atol=1e-3, time_limit=5),
            on_graphs=hook,
        )  # fmt: skip
    return report, report.extra["on_graphs"], checkpoints, seen["graphs"]


@pytest.mark.parametrize("search", ["greedy", "auto", "eqsat"])
def test_bisection_names_the_lossy_rewrite(tmp_path, search):
    report, ex, _, _ = _explained(tmp_path, search)
    drift = ex.drift
    assert drift.available
    assert drift.blamed_rules == [LOSSY_RULE]
    assert all(ex.rewrites[k].rule == LOSSY_RULE for k in drift.blamed_steps)
    # The drift measured is the numeric check's difference (same inputs), and what the
    # lossy rewrite explains: up to half an ulp of 4096, and all of it.
    assert 0 < drift.total <= MAX_DRIFT
    assert drift.total == pytest.approx(report.max_abs_error, rel=1e-6)
    assert drift.share == pytest.approx(1.0)
    assert LOSSY_RULE in drift.summary
    # Every applied rule is listed with where its text lives.
    for record in ex.rewrites:
        assert ex.proofs[record.rule].location.startswith("rules/")


def test_greedy_steps_replay_exactly_and_are_drawn(tmp_path):
    _, ex, checkpoints, (original, cleaned, rewritten) = _explained(tmp_path, "greedy")
    rules = default_rules().rules
    chain = build_chain(cleaned, checkpoints, rewritten, rules)
    steps = [link for link in chain if link.steps]
    assert steps and all(link.kind == STEP for link in steps)
    for a, b in zip(chain, chain[1:]):
        assert a.after.key == b.before.key
    assert chain[0].before.key == cleaned.key and chain[-1].after.key == rewritten.key
    assert sorted(k for link in steps for k in link.steps) == list(range(len(ex.rewrites)))
    for record in ex.rewrites:
        assert record.kind == STEP and "<svg" in record.before_svg and "<svg" in record.after_svg
        assert record.drift_after is not None  # a short chain: every graph ran


def test_eqsat_block_segments_splice_back_to_the_block(tmp_path):
    graph, _ = onnx_io.import_model(lossy_model(), None)
    with recording() as checkpoints:
        result, trace = algorithm("eqsat")(graph, default_rules(), _analytic(), _budget())
    assert trace.steps and checkpoints[-1].after is result
    segs = segments(graph, result)
    assert segs
    assert splice(graph, []).key == graph.key
    whole = splice(graph, segs)
    whole.check()
    probe = DriftProbe(result)
    assert probe.drift(whole) == 0.0  # all segments in: the block's computation
    original = DriftProbe(graph)
    assert original.drift(whole) == pytest.approx(original.drift(result))


def test_bisect_keeps_its_invariant():
    series = [0.0, 0.0, 0.1, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0]
    calls = []

    def drift(i):
        calls.append(i)
        return series[i]

    found = bisect(len(series) - 1, drift)
    assert found.link == 3 and found.threshold == 0.5
    assert (found.before, found.after) == (0.1, 0.9)
    assert found.share == pytest.approx(0.8)
    assert len(calls) <= math.ceil(math.log2(len(series))) + 1
    # Not monotone: the answer is still a link where the drift crosses the threshold.
    wavy = [0.0, 0.8, 0.1, 0.2, 0.7, 0.3, 1.0]
    found = bisect(len(wavy) - 1, wavy.__getitem__)
    assert wavy[found.link - 1] < 0.5 <= wavy[found.link]
    assert bisect(3, lambda i: 0.0).link is None


def test_max_abs_difference():
    a = {"y": np.array([1.0, np.nan, 3.0], np.float32), "k": np.array([1, 2])}
    b = {"y": np.array([1.5, np.nan, 3.0], np.float32), "k": np.array([1, 4])}
    assert max_abs_difference(a, b) == 2.0
    assert max_abs_difference(a, a) == 0.0
    assert max_abs_difference(a, {"y": np.array([1.0, 0.0, 3.0], np.float32)}) == math.inf


def test_proof_info_reads_the_cache_and_respects_the_budget(tmp_path):
    from optimizer.verify.cache import ResultCache
    from optimizer.verify.verifier import RuleResult

    rules = {r.name: r for r in default_rules().rules}
    cached, other = rules["relu-relu"], rules[LOSSY_RULE]
    cache = ResultCache()
    cache.put(RuleResult(cached.name, cached.family, cached.digest, "proved", "all-shapes"))
    cache.save()
    info = proof_info([cached, other], budget_s=0.0)
    assert info["relu-relu"].origin == "cache" and info["relu-relu"].status == "proved"
    assert "all shapes" in info["relu-relu"].summary
    assert info[LOSSY_RULE].status == "not re-proved"
    assert f"graphopt rules verify {LOSSY_RULE}" in info[LOSSY_RULE].summary
    assert info[LOSSY_RULE].source == other.source


def test_layout_is_layered_and_the_svg_well_formed():
    nodes = [DrawNode(i, i.upper()) for i in "abcde"]
    edges = [DrawEdge("a", "b"), DrawEdge("a", "c"), DrawEdge("b", "d"), DrawEdge("c", "d"),
             DrawEdge("a", "e"), DrawEdge("d", "e")]  # fmt: skip
    place, paths, width, height = layout(nodes, edges)
    for e in edges:  # every edge points down
        assert place[e.src][1] < place[e.dst][1]
    assert len(paths) == len(edges)
    assert len(paths[4]) == 4  # a -> e spans three layers: two virtual points between
    svg = ET.fromstring(render_svg(nodes, edges, title="t <&>"))
    ns = "{http://www.w3.org/2000/svg}"
    assert len(svg.findall(f".//{ns}rect")) == 5
    assert float(svg.get("width")) == pytest.approx(width)
    with pytest.raises(ValueError, match="cycle"):
        layout(nodes[:2], [DrawEdge("a", "b"), DrawEdge("b", "a")])


def test_ir_drawing_shows_the_focus_and_its_neighbours():
    graph, _ = onnx_io.import_model(lossy_model(), None)
    sub = next(n for n in graph.nodes() if n.op == "Sub")
    drawn, edges = ir_drawing(graph, [sub])
    styles = {d.label: d.style for d in drawn}
    assert styles["Sub"] == "matched"
    assert {"Add"} <= {d.label for d in drawn if d.style == "context"}
    assert any(d.style == "const" and "4096" in d.sublabel for d in drawn)
    assert all(e.src in {d.id for d in drawn} and e.dst in {d.id for d in drawn} for e in edges)
    ET.fromstring(render_svg(drawn, edges))


def _analytic():
    from optimizer.api import cost_model

    return cost_model(OptimizeOptions())


def _budget():
    from optimizer.search.base import Budget

    return Budget(time_limit=5)


def test_no_rewrites_means_no_drift(tmp_path):
    src = tmp_path / "plain.onnx"
    model = lossy_model()
    del model.graph.node[:]
    model.graph.node.append(onnx.helper.make_node("Relu", ["x"], ["y"], name="only"))
    del model.graph.initializer[:]
    onnx.save(model, src)
    with recording() as checkpoints:
        report = optimize_file(
            src, tmp_path / "o.onnx",
            on_graphs=lambda o, c, r: explain_optimization(o, c, r, checkpoints),
        )  # fmt: skip
    ex = report.extra["on_graphs"]
    assert ex.rewrites == [] and ex.drift.total == 0.0 and ex.drift.blamed_link is None
    assert "no drift" in ex.drift.summary


def test_a_block_is_refined_to_the_segment_behind_the_drift(monkeypatch):
    """Steps that cannot be replayed (here: none may be) leave an equality-saturation call as
    one block: the bisection blames the block, then bisects its segments and names the one
    that replaced the lossy sum, attributed to the steps that matched there."""
    monkeypatch.setattr("optimizer.explain.chain.MAX_REPLAYED", 0)
    graph, _ = onnx_io.import_model(lossy_model(), None)
    with recording() as checkpoints:
        result, trace = algorithm("eqsat")(graph, default_rules(), _analytic(), _budget())
    ex = explain_optimization(graph, graph, result, checkpoints)
    assert [link["kind"] for link in ex.links] == [BLOCK]
    assert all(r.kind == BLOCK for r in ex.rewrites) and len(ex.rewrites) == len(trace.steps)
    drift = ex.drift
    assert drift.blamed_link == 0 and drift.blamed_segment is not None
    blamed = ex.segments[drift.blamed_segment]
    assert LOSSY_RULE in blamed.rules and "sub_big" in blamed.replaced
    assert LOSSY_RULE in drift.blamed_rules
    assert any(ex.rewrites[k].rule == LOSSY_RULE for k in drift.blamed_steps)
    others = [s for k, s in enumerate(ex.segments) if k != drift.blamed_segment]
    assert all("sub_big" not in s.replaced for s in others)
    assert drift.share == pytest.approx(1.0)
