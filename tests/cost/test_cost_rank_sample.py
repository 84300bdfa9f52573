"""The cost-ranking benchmark's sample: its kinds, the groups it scores, and its Markdown."""

from __future__ import annotations

import numpy as np
from cost_helpers import const, f32, op
from cost_helpers import graph as cost_rank_graph

from benchmarks import cost_rank
from optimizer.ir import graph_input as ir_input


def _fake_walk(graph, steps, rng):
    """A distinct graph per draw (x + a random constant), "rewritten" ``steps`` times."""
    (x,) = graph.inputs
    out = op("Add", [x, const(np.float32(rng.random()))], x.type).output
    return cost_rank_graph([out], [x]), ["fake"] * steps


def test_long_walks_come_after_and_leave_the_other_candidates_as_they_were(monkeypatch):
    monkeypatch.setattr(cost_rank, "random_walk", _fake_walk)
    x = ir_input("x", f32(4, 4))
    g = cost_rank_graph([op("Relu", [x], f32(4, 4)).output], [x])
    short = cost_rank.candidates(g, walks=3, unfused=2, max_steps=4, seed=0)
    wide = cost_rank.candidates(g, walks=3, unfused=2, max_steps=4, seed=0, long_walks=5)
    assert [c["graph"].key for c in wide[: len(short)]] == [c["graph"].key for c in short]
    assert [c["kind"] for c in wide] == ["input"] + ["walk"] * 3 + ["long"] * 5  # no fusions
    assert all(1 <= len(c["rules"]) <= 4 for c in wide if c["kind"] == "walk")
    assert all(5 <= len(c["rules"]) <= 12 for c in wide if c["kind"] == "long")


def test_groups_nest_and_only_wide_holds_the_long_walks():
    groups = cost_rank.GROUPS
    assert set(groups["search"]) < set(groups["all"]) < set(groups["wide"])
    assert "long" in groups["wide"] and "long" not in groups["all"]
    assert "unfused" not in groups["search"]


def _entry(name: str, groups) -> dict:
    entry = {"name": name, "reference_latency_ms": 0.5, "measured_cost_seconds": 1.0}
    for group in groups:
        entry.update({
            f"{group}_candidates": 5, f"{group}_latency_spread": [0.9, 1.3],
            f"{group}_latency_retest": 0.9, f"{group}_spearman_measured": 0.85,
            f"{group}_spearman_analytic": 0.5, f"{group}_spearman_analytic_calibrated": 0.7,
        })  # fmt: skip
    return entry


def test_markdown_has_the_old_style_and_the_wide_table():
    summary = {"models": 2}
    for group in cost_rank.GROUPS:
        for key in ("measured", "analytic", "analytic_calibrated", "retest"):
            summary[f"{group}_mean_{key}"] = 0.5
        summary[f"{group}_measured_at_least_0.8"] = 1
    document = {
        "config": {"walks": 8, "unfused": 4, "long_walks": 6, "rounds": 10, "repeats": 2},
        "machine_line": "test machine", "loadavg_start": [1.0], "loadavg_end": [2.0],
        "command": "python -m benchmarks.cost_rank",
        "models": [_entry("new", cost_rank.GROUPS), _entry("old", ("search", "all"))],
        "summary": summary,
    }  # fmt: skip
    text = cost_rank.markdown(document)
    assert "Wide sample" in text and "6 longer walks" in text
    assert "| new | 0.50 ms | 5 | 0.85 | - | 0.70 |" in text
    # A model from before the wide sample existed: dashes, not an error.
    assert "| old | 0.50 ms | - | - | - | - | - | - | - |" in text
    assert "Mean rho over wide candidates" in text


def test_fast_models_get_more_rounds_slow_ones_the_fewest():
    # A 0.5 ms model, samples of 30 ms: 2 s per candidate takes 67 rounds.
    assert cost_rank.rounds_for(0.0005, 10, 0.03, 2.0) == 67
    # A 100 ms model: one run per sample, 20 rounds reach 2 s.
    assert cost_rank.rounds_for(0.1, 10, 0.03, 2.0) == 20
    # Never fewer than asked.
    assert cost_rank.rounds_for(1.0, 10, 0.03, 2.0) == 10
    assert cost_rank.rounds_for(0.0005, 10, 0.03, 0.0) == 10


def test_each_batch_is_measured_against_the_median_session_of_the_input(monkeypatch):
    from argparse import Namespace

    from optimizer.cost.rerank import Ranked

    # The reference session runs 15% slow for the whole batch: the two anchors (more sessions
    # of the input) run at 1 / 1.15 of it, and so do the candidates' speedups over it.
    speedups = [1.15 * 1.0, 1.15 / 1.1, 1.15, 1.15 * 1.01]  # two candidates, two anchors

    def fake_rerank(graphs, reference, **kwargs):
        assert graphs[2:] == [reference, reference]
        ranked = [Ranked(i, 1.0, s, s, s) for i, s in enumerate(speedups)]
        return sorted(ranked, key=lambda r: -r.speedup)

    monkeypatch.setattr(cost_rank, "rerank", fake_rerank)
    args = Namespace(anchors=2, sample_seconds=0.03)
    batch = [{"graph": "a"}, {"graph": "b"}]
    timed = cost_rank._time(batch, "ref", None, 10, args)
    assert [r.index for r in timed] == [0, 1]
    assert [round(1 / r.speedup, 3) for r in timed] == [1.0, 1.1]  # against the input
    assert cost_rank.baseline([]) == 1.0
    assert cost_rank.baseline([0.5, 1.0]) == 1.0  # one slow anchor is outvoted
