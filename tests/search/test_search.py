"""The search algorithms (optimizer.search): soundness, budgets, determinism, and what sets
them apart (OCGGS's canonical order, DP's local matching, sampling's escapes, partitioning)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rewrite"))
from rewrite_helpers import imported, init, model, rand, tensor  # noqa: E402

from optimizer import onnx_io, runtime  # noqa: E402
from optimizer.api import OptimizeOptions, cost_model  # noqa: E402
from optimizer.passes import SEARCH_ALGORITHMS  # noqa: E402
from optimizer.passes.fold import fold_constants  # noqa: E402
from optimizer.passes.rewrite import default_rules, is_commutation  # noqa: E402
from optimizer.rewrite.match import MatchIndex  # noqa: E402
from optimizer.search import NAMES, Budget, algorithm, choose, run_search  # noqa: E402
from optimizer.search.partition import parts_of  # noqa: E402

EXACT = ("greedy", "taso", "ocggs", "ocggs-prune", "ocggs-sample")


def _cost():
    return cost_model(OptimizeOptions())


def _mlp(layers: int = 6):
    """MatMul + bias Add + Relu + a cancelling Transpose pair + a multiply by one per layer:
    independent improvements at every layer."""
    nodes, inits = [], [init("one", np.ones(1, np.float32))]
    h = "x"
    for i in range(layers):
        inits += [init(f"w{i}", rand(16, 16, seed=i)), init(f"b{i}", rand(16, seed=100 + i))]
        nodes += [
            helper.make_node("MatMul", [h, f"w{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"ad{i}"]),
            helper.make_node("Relu", [f"ad{i}"], [f"r{i}"]),
            helper.make_node("Transpose", [f"r{i}"], [f"t{i}"], perm=[1, 0]),
            helper.make_node("Transpose", [f"t{i}"], [f"u{i}"], perm=[1, 0]),
            helper.make_node("Mul", [f"u{i}", "one"], [f"h{i}"]),
        ]
        h = f"h{i}"
    return model(nodes, [tensor("x", [4, 16])], [tensor(h, [4, 16])], inits)


def _parallel_convs():
    """Two convolutions of one input, concatenated on channels (Inception's pattern)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "w2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("Concat", ["c1", "c2"], ["y"], axis=1),
    ]
    inits = [init("w1", rand(4, 3, 1, 1, seed=1)), init("w2", rand(5, 3, 1, 1, seed=2))]
    return model(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 9, 8, 8])], inits)


def _search(proto, name, **budget):
    graph = imported(proto)
    return graph, *run_search(
        graph, default_rules(), name=name, cost=_cost(), budget=Budget(**budget),
        fold=fold_constants,
    )  # fmt: skip


@pytest.mark.parametrize("name", EXACT + ("auto",))
def test_every_algorithm_is_sound_and_never_costlier(name):
    proto = _mlp()
    graph, result, trace = _search(proto, name, time_limit=20)
    cost = _cost()
    assert cost(result) <= cost(graph)
    assert trace.cost_after == pytest.approx(cost(result))
    assert trace.cost_after < trace.cost_before  # the MLP has improvements to find
    assert len(result.nodes()) < len(graph.nodes())
    report = runtime.compare_models(proto, onnx_io.to_proto(result), rtol=1e-5, atol=1e-6)
    assert report.ok, report.summary()
    # The trace leads from the input's cost to the result's, step by step.
    assert trace.steps and trace.steps[0].cost_before == pytest.approx(trace.cost_before)
    for step in trace.steps:
        assert step.rule and step.nodes_matched


@pytest.mark.parametrize("name", EXACT)
def test_algorithms_are_deterministic(name):
    _, first, t1 = _search(_mlp(3), name, time_limit=20)
    _, second, t2 = _search(_mlp(3), name, time_limit=20)
    assert [s.rule for s in t1.steps] == [s.rule for s in t2.steps]
    assert (
        onnx_io.to_proto(first).SerializeToString() == onnx_io.to_proto(second).SerializeToString()
    )


@pytest.mark.parametrize("name", ("taso", "ocggs", "ocggs-prune", "ocggs-sample"))
def test_time_limit_is_honoured(name):
    graph = imported(_mlp(8))
    fn = algorithm(name)
    result, trace = fn(graph, default_rules(), _cost(), Budget(time_limit=1e-9))
    assert trace.stopped_by == "time limit"
    assert _cost()(result) <= _cost()(graph)
    result.check()


@pytest.mark.parametrize("name", ("taso", "ocggs", "ocggs-prune"))
def test_step_budget_is_honoured(name):
    # One expansion: OCGGS's descent takes the eight layers' independent improvements in
    # one round of matching, and needs a second round to see that nothing is left.
    graph = imported(_mlp(8))
    _, trace = algorithm(name)(graph, default_rules(), _cost(), Budget(max_steps=1))
    assert trace.stopped_by == "budget" and trace.explored <= 1


def test_ocggs_pruning_visits_each_set_of_independent_rewrites_once():
    # n independent improving rewrites: the canonical order admits each subset once (at
    # most 2^n graphs), where an unordered search reaches them along n! orders.
    graph = imported(_mlp(3))
    rules = MatchIndex([r for r in default_rules().rules if r.name == "transpose-transpose-cancel"])
    n = 3
    _, pruned = algorithm("ocggs-prune")(graph, rules, _cost(), Budget(max_depth=n))
    _, backtracking = algorithm("taso")(graph, rules, _cost(), Budget())
    assert len(pruned.steps) == n
    assert pruned.extra["graphs_seen"] <= 2**n
    assert pruned.cost_after == pytest.approx(backtracking.cost_after)


def test_merging_parallel_convolutions_is_found_and_sound():
    proto = _parallel_convs()
    for name in ("ocggs", "taso", "ocggs-sample"):
        graph, result, trace = _search(proto, name, time_limit=20)
        assert "concat-convs-sharing-input" in {s.rule for s in trace.steps}, name
        ops = [n.op for n in result.nodes() if not n.is_source]
        assert ops.count("Conv") == 1, (name, ops)
        assert runtime.compare_models(proto, onnx_io.to_proto(result)).ok


def test_partitioned_search_stays_inside_parts_then_crosses():
    graph = imported(_mlp(8))
    parts = parts_of(graph, 10)
    assert sum(len(p) for p in parts) == sum(1 for n in graph.nodes() if not n.is_source)
    result, trace = algorithm("ocggs+partition")(graph, default_rules(), _cost(), Budget())
    assert trace.algorithm == "ocggs_partitioned+partition" or "partition" in trace.algorithm
    assert trace.extra["parts"] >= 1
    assert _cost()(result) < _cost()(graph)
    proto = onnx_io.to_proto(graph)
    assert runtime.compare_models(proto, onnx_io.to_proto(result)).ok


def test_auto_runs_ocggs_then_equality_saturation():
    assert choose(imported(_mlp(2)), Budget()) == "ocggs>eqsat"
    graph = imported(_mlp(2))
    result, trace = algorithm("ocggs>eqsat")(graph, default_rules(), _cost(), Budget())
    assert trace.algorithm == "ocggs>eqsat" and set(trace.extra) == {"ocggs-dp", "eqsat"}
    assert trace.cost_after <= trace.cost_before and _cost()(result) == pytest.approx(
        trace.cost_after
    )


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="unknown search algorithm 'magic'"):
        algorithm("magic")


def test_the_options_accept_exactly_the_registered_algorithms():
    assert set(SEARCH_ALGORITHMS) == set(NAMES)


def test_commutation_rules_are_left_out_of_searches():
    names = {r.name for r in default_rules().rules}
    assert "add-commute" not in names and "mul-commute" not in names
    from optimizer.rewrite.rule import load_rules, rules_dir

    library = load_rules(rules_dir())
    assert {r.name for r in library if is_commutation(r)} >= {"add-commute", "mul-commute"}
    # A rule that swaps inputs of a non-commutative op is not a commutation.
    assert not any(is_commutation(r) for r in library if r.match and r.match[0].op == "Sub")


def test_optimize_reports_the_trace_and_records_a_summary(tmp_path):
    import json

    import onnx

    import optimizer

    proto = _mlp(2)
    src = tmp_path / "m.onnx"
    onnx.save(proto, src)
    report = optimizer.optimize_file(src, tmp_path / "o.onnx", search="ocggs")
    data = report.to_json()
    assert data["search"]["algorithm"] == "ocggs" and data["search"]["steps"]
    saved = onnx.load(tmp_path / "o.onnx")
    props = {p.key: p.value for p in saved.metadata_props}
    summary = json.loads(props["graphopt.optimization"])
    assert summary["search"] == "ocggs" and summary["cost_after"] < summary["cost_before"]
    assert sum(summary["rewrites"].values()) == len(data["search"]["steps"])


@pytest.mark.parametrize("name", ("greedy", "taso", "ocggs-sample"))
def test_models_with_tensor_types_search_cleanly(name):
    # A model with integer inputs and a shape computation: searches must leave it valid.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["x", "s"], ["y"]),
        helper.make_node("Add", ["y", "k"], ["z"]),
    ]
    proto = model(
        nodes, [tensor("x", [2, 3])], [tensor("z", [2, 3])], [init("k", np.zeros(1, np.float32))]
    )
    graph, result, _ = _search(proto, name, time_limit=5)
    result.check()
    assert runtime.compare_models(proto, onnx_io.to_proto(result)).ok
    assert TensorProto.FLOAT  # the model stays float
