"""OCGGS's search (optimizer.search.ocggs): the descent, the local lookahead that finds a
costlier step's payoff, OCGGS's DP matching, and the reuse of what failed in repeated cells."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rewrite"))
from rewrite_helpers import imported, init, model, rand, rule, tensor  # noqa: E402

from optimizer import onnx_io, runtime  # noqa: E402
from optimizer.api import OptimizeOptions, cost_model  # noqa: E402
from optimizer.rewrite import match as match_module  # noqa: E402
from optimizer.rewrite.match import MatchIndex  # noqa: E402
from optimizer.search import Budget, algorithm  # noqa: E402
from optimizer.search import ocggs as ocggs_module  # noqa: E402

# A costlier rewrite (one op more) that creates what a cheaper one removes: 1/(1/z) = z.
MUL_AS_DIV = rule("""rule mul-as-div:  # a*b = a/(1/b)
    match: Mul(a, b)
    rewrite: Div(a, Reciprocal(b))
""")
RECIPROCAL_TWICE = rule("""rule reciprocal-reciprocal:  # 1/(1/z) = z
    match: Reciprocal(Reciprocal(z))
    rewrite: z
""")
RULES = MatchIndex([MUL_AS_DIV, RECIPROCAL_TWICE])


def _cost():
    return cost_model(OptimizeOptions())


def _cells(reciprocal: int, plain: int = 0, widths=None):
    """``reciprocal`` cells ``x * (1/z)`` (two steps to ``x / z``, the first one costlier)
    and ``plain`` cells ``x * y`` (a costlier step leading nowhere), beside one big MatMul that
    keeps each costlier step within TASO's alpha of the graph's cost."""
    nodes, inputs, outputs = [helper.make_node("MatMul", ["p", "w"], ["q"])], [], []
    widths = widths or [8] * (reciprocal + plain)
    for i in range(reciprocal + plain):
        shape = [4, widths[i]]
        inputs += [tensor(f"x{i}", shape), tensor(f"z{i}", shape)]
        if i < reciprocal:
            nodes.append(helper.make_node("Reciprocal", [f"z{i}"], [f"r{i}"]))
            nodes.append(helper.make_node("Mul", [f"x{i}", f"r{i}"], [f"y{i}"]))
        else:
            nodes.append(helper.make_node("Mul", [f"x{i}", f"z{i}"], [f"y{i}"]))
        outputs.append(tensor(f"y{i}", shape))
    return model(
        nodes,
        [tensor("p", [256, 256]), *inputs],
        [tensor("q", [256, 256]), *outputs],
        [init("w", rand(256, 256, seed=1))],
    )


def _run(name, proto, **budget):
    return algorithm(name)(imported(proto), RULES, _cost(), Budget(**budget))


@pytest.mark.parametrize("name", ("ocggs", "ocggs-prune"))
def test_the_lookahead_takes_a_costlier_step_for_the_cheaper_graph_behind_it(name):
    proto = _cells(1)
    _, greedy = _run("greedy", proto)
    result, trace = _run(name, proto)
    assert greedy.cost_after == greedy.cost_before  # one step at a time finds nothing
    assert [s.rule for s in trace.steps] == ["mul-as-div", "reciprocal-reciprocal"]
    assert trace.cost_after < trace.cost_before
    assert [n.op for n in result.nodes() if n.op in ("Mul", "Div", "Reciprocal")] == ["Div"]
    result.check()
    report = runtime.compare_models(proto, onnx_io.to_proto(result), rtol=1e-5, atol=1e-6)
    assert report.ok, report


def test_the_descent_takes_independent_improvements_in_one_matching():
    # Six cells each one step from x / z once the first step is taken; after the first
    # lookahead, the descent is not needed: every improvement is found by passes, and each
    # pass matches the whole graph once.
    result, trace = _run("ocggs", _cells(6))
    assert len(trace.steps) == 12
    assert trace.extra["lookaheads"] <= 2
    assert trace.extra["descents"] <= 3


def test_locality_keeps_independent_costlier_steps_from_multiplying():
    # Six cells where the costlier step (x*z as x/(1/z) or z/(1/x)) leads nowhere: TASO
    # visits every combination (3^6 graphs); OCGGS's lookahead tries each step alone, since
    # no step of one cell touches another (distinct widths keep the cells from looking alike).
    proto = _cells(0, 6, widths=[4, 5, 6, 7, 8, 9])
    _, taso = _run("taso", proto)
    _, ocggs = _run("ocggs", proto)
    assert taso.extra["graphs_seen"] == 3**6
    assert ocggs.extra["graphs_seen"] <= 2 * 6 + 1
    assert ocggs.cost_after == taso.cost_after == ocggs.cost_before


def test_a_repeated_cell_that_led_nowhere_is_not_searched_again(monkeypatch):
    proto = _cells(2, 5)
    _, trace = _run("ocggs", proto)
    monkeypatch.setattr(ocggs_module, "SIGNATURE_NODES", 0)  # no signatures
    _, unshared = _run("ocggs", proto)
    # Each plain cell offers two first steps; those of the four cells after the first are
    # skipped in every pass.
    assert trace.extra["skipped_as_seen"] >= 2 * 4
    assert unshared.extra["skipped_as_seen"] == 0
    assert trace.explored < unshared.explored
    assert trace.cost_after == pytest.approx(unshared.cost_after)
    assert len(trace.steps) == len(unshared.steps) == 4


def test_dp_matches_around_new_nodes_instead_of_matching_every_graph(monkeypatch):
    proto = _cells(1, 3, widths=[8, 5, 6, 7])
    whole = {"n": 0}
    original = match_module.MatchIndex.matches

    def counting(self, *args, **kwargs):
        whole["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(match_module.MatchIndex, "matches", counting)
    counts, results = {}, {}
    for name in ("ocggs", "ocggs-prune"):
        whole["n"] = 0
        results[name] = _run(name, proto, max_depth=3)[1]
        counts[name] = whole["n"]
    assert results["ocggs"].cost_after == pytest.approx(results["ocggs-prune"].cost_after)
    dp = results["ocggs"].extra
    # Only each descent round matches the whole graph (a lookahead pass starts from the
    # descent's last list): the lookahead's subtrees match around what their steps made.
    assert counts["ocggs"] == dp["descents"]
    assert counts["ocggs-prune"] > counts["ocggs"]


def test_the_search_is_deterministic():
    proto = _cells(3, 3, widths=[8, 8, 6, 8, 8, 7])
    first = _run("ocggs", proto)[1]
    second = _run("ocggs", proto)[1]
    assert _canonical(first.steps) == _canonical(second.steps)
    assert first.cost_after == second.cost_after


def _canonical(steps) -> list[tuple[str, list[str]]]:
    """The steps with the serial numbers of unnamed nodes (``op#serial``, process-wide
    counters: the second run makes new nodes where the first one's were freed) renumbered
    in order of first appearance."""
    numbers: dict[str, str] = {}

    def name(node: str) -> str:
        if "#" not in node:
            return node
        return numbers.setdefault(node, f"{node.split('#')[0]}#{len(numbers)}")

    return [(s.rule, [name(n) for n in s.nodes_matched]) for s in steps]


def test_a_zero_time_limit_returns_the_input_unchanged():
    graph = imported(_cells(2))
    result, trace = algorithm("ocggs")(graph, RULES, _cost(), Budget(time_limit=0.0))
    assert trace.stopped_by == "time limit" and not trace.steps
    assert result.key == graph.key
    assert np.isclose(trace.cost_after, trace.cost_before)


def _layers(n: int):
    """``n`` layers of MatMul + bias Add + a cancelling Transpose pair: independent
    improvements in a chain, each downstream of the one before."""
    nodes, inits, h = [], [], "x"
    for i in range(n):
        inits += [init(f"w{i}", rand(16, 16, seed=i)), init(f"b{i}", rand(16, seed=100 + i))]
        nodes += [
            helper.make_node("MatMul", [h, f"w{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"ad{i}"]),
            helper.make_node("Transpose", [f"ad{i}"], [f"t{i}"], perm=[1, 0]),
            helper.make_node("Transpose", [f"t{i}"], [f"h{i}"], perm=[1, 0]),
        ]
        h = f"h{i}"
    return model(nodes, [tensor("x", [4, 16])], [tensor(h, [4, 16])], inits)


def test_applying_a_round_at_once_equals_applying_it_step_by_step():
    from optimizer.passes.rewrite import default_rules
    from optimizer.search.expand import Explorer

    proto = _layers(4)
    graph = imported(proto)
    explorer = Explorer(default_rules(), _cost(), graph.meta.opset(""))
    chosen, used = [], set()
    for step in sorted(explorer.steps(graph), key=lambda s: s.delta):
        if step.delta < 0 and step.match.nodes.isdisjoint(used):
            chosen.append(step)
            used |= step.match.nodes
    assert len(chosen) >= 4  # every layer offers one: later ones read rebuilt values
    batch, applied = explorer.apply_all(graph, chosen)
    assert len(applied) == len(chosen)
    one_by_one = graph
    position = explorer.context(graph).position
    for step in sorted(chosen, key=lambda s: -max(position[n] for n in s.match.nodes)):
        one_by_one = explorer.apply(one_by_one, step)  # downstream first: upstream stays valid
    assert batch.key == one_by_one.key
    batch.check()
    assert all(batch.node_meta.get(n) is not None for n in batch.nodes())
    report = runtime.compare_models(proto, onnx_io.to_proto(batch), rtol=1e-5, atol=1e-6)
    assert report.ok, report
