"""Constants inside equality saturation (optimizer/search/eqsat_fold.py, eqsat_match.py) and
the extraction shortcuts (optimizer/search/extract_egraph.py's ``solve_few``).

- a weight that rewrites compute from constants counts as a constant for ``is_const`` without
  being folded: a 1x1 kernel enlarged twice (the second enlargement asks ``is_const`` of the
  first one's padded kernel) merges with a 3x3 convolution enlarged once, nothing folded;
- a condition that reads data (``all_equal``) of such a class has it folded, and the rewrite
  then applies; one that the type refutes (``is_identity_matrix`` of a non-square matrix)
  folds nothing, while a square one is folded to be tested;
- ``solve_few``: a forced choice and a few open ones give the ILP's optimum, pins hold;
- the garbage collector is as it was after a search; ``pattern_ops`` lists a rule's ops.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import numpy as np
from onnx import helper

ROOT = Path(__file__).resolve().parents[2]
for folder in (ROOT, ROOT / "tests", ROOT / "tests" / "rewrite"):  # shared test helpers
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from rewrite_helpers import imported, init, model, rand, tensor  # noqa: E402

from optimizer import onnx_io, runtime  # noqa: E402
from optimizer.cost import AnalyticCost  # noqa: E402
from optimizer.rewrite import load_rules  # noqa: E402
from optimizer.rewrite.match import MatchIndex  # noqa: E402
from optimizer.search import algorithm, eqsat_fold  # noqa: E402
from optimizer.search.base import Budget  # noqa: E402
from optimizer.search.eqsat import Saturation, eqsat  # noqa: E402
from optimizer.search.eqsat_match import pattern_ops  # noqa: E402
from optimizer.search.extract import ExtractionProblem, solve  # noqa: E402
from optimizer.search.extract_egraph import solve_few  # noqa: E402

COST = AnalyticCost()


def _same_outputs(proto, graph) -> None:
    report = runtime.compare_models(proto, onnx_io.to_proto(graph), num_samples=2)
    assert report.ok, report.summary()


def _rules(*names: str) -> MatchIndex:
    return MatchIndex([r for r in load_rules() if r.name in names])


# ------------------------------------------------------------------ computed classes


def test_a_computed_weight_is_a_constant_to_rules_without_being_folded(monkeypatch):
    monkeypatch.setattr(eqsat_fold, "EAGER_FOLD_BYTES", 0)  # nothing folds unless asked
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1x1"),
        helper.make_node("Conv", ["x", "w2"], ["b"], name="conv3x3", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a", "b"], ["y"], name="concat", axis=1),
    ]
    weights = [init("w1", rand(2, 2, 1, 1, seed=1)), init("w2", rand(3, 2, 3, 3, seed=2))]
    proto = model(nodes, [tensor("x", [1, 2, 6, 6])], [tensor("y", [1, 5, 6, 6])], weights)
    graph = imported(proto)
    rules = _rules("conv-enlarge-kernel", "concat-convs-sharing-input")
    result, trace = eqsat(graph, rules, COST, Budget(time_limit=20))
    # both kernels end 5x5 (an original 3x3 has no kernel_shape attribute to match): the
    # 1x1 is enlarged twice, the 3x3 once, every padded kernel left unfolded
    assert [s.rule for s in trace.steps].count("conv-enlarge-kernel") == 3
    assert [n.op for n in result.nodes() if n.op == "Conv"] == ["Conv"]
    assert trace.extra["folded"] == 0 and COST(result) < COST(graph)
    result.check()
    _same_outputs(proto, result)


def _relu_of_mul_by_computed_ones():
    # y = relu(x * (h + h)) with h = 0.5: the factor is computed, all ones, never a constant
    nodes = [
        helper.make_node("Add", ["h", "h"], ["c"]),
        helper.make_node("Mul", ["x", "c"], ["m"]),
        helper.make_node("Relu", ["m"], ["y"]),
    ]
    half = init("h", np.full([4], 0.5, dtype=np.float32))
    return model(nodes, [tensor("x", [2, 4])], [tensor("y", [2, 4])], [half])


def test_a_condition_on_data_has_the_class_folded(monkeypatch):
    monkeypatch.setattr(eqsat_fold, "EAGER_FOLD_BYTES", 0)
    proto = _relu_of_mul_by_computed_ones()
    graph = imported(proto)
    result, trace = eqsat(graph, _rules("mul-one"), COST, Budget(time_limit=20))
    assert trace.extra["folded"] == 1  # the ones, asked for by all_equal(c, 1)
    assert [s.rule for s in trace.steps] == ["mul-one"]
    assert [n.op for n in result.nodes()] == ["Relu"]
    _same_outputs(proto, result)


def _matmul_by_concatenation(columns: int):
    nodes = [
        helper.make_node("Concat", ["w1", "w2"], ["w"], axis=1),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    weights = [init("w1", rand(4, columns, seed=1)), init("w2", rand(4, columns, seed=2))]
    return model(nodes, [tensor("x", [3, 4])], [tensor("y", [3, 2 * columns])], weights)


def test_a_data_test_the_type_refutes_folds_nothing(monkeypatch):
    monkeypatch.setattr(eqsat_fold, "EAGER_FOLD_BYTES", 0)
    rules = _rules("matmul-identity")
    wide = Saturation(imported(_matmul_by_concatenation(3)), rules, COST, Budget())
    wide.run(time.perf_counter() + 20)
    assert wide.folder.folded == 0  # 4x6 is no identity, whatever its values
    square = Saturation(imported(_matmul_by_concatenation(2)), rules, COST, Budget())
    square.run(time.perf_counter() + 20)
    assert square.folder.folded == 1 and square.apps == []  # 4x4: folded, then tested


# ------------------------------------------------------------------ few choices


def _problem(pinned=None) -> ExtractionProblem:
    # class 0 (the root) = a (5) reading class 1, or b (3) reading class 2; c = 1, d = 4
    return ExtractionProblem(
        costs=[5.0, 3.0, 1.0, 4.0],
        kids=[(1,), (2,), (), ()],
        members=[[0, 1], [2], [3]],
        roots=[0],
        pinned=pinned or {},
    )


def test_few_choices_give_the_ilps_optimum():
    few = solve_few(_problem(), 10.0)
    assert (few.method, few.choice, few.cost) == ("exhaustive", {0: 0, 1: 2}, 6.0)
    assert few.ilp_status.startswith("not needed")
    ilp = solve(_problem(), 10.0)
    assert (ilp.method, ilp.choice, ilp.cost) == ("ilp", few.choice, few.cost)
    pinned = solve_few(_problem({0: 1}), 10.0)
    assert (pinned.method, pinned.choice, pinned.cost) == ("forced", {0: 1, 2: 3}, 7.0)


def test_many_choices_go_to_the_ilp(monkeypatch):
    from optimizer.search import extract_egraph

    monkeypatch.setattr(extract_egraph, "EXHAUSTIVE_CHOICES", 1)
    result = solve_few(_problem(), 10.0)
    assert (result.method, result.cost) == ("ilp", 6.0)


# ------------------------------------------------------------------ the rest


def test_the_collector_is_left_as_it_was():
    graph = imported(_relu_of_mul_by_computed_ones())
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            # Every registered algorithm runs with the collector paused (search.algorithm).
            algorithm("eqsat")(graph, _rules("mul-one"), COST, Budget(time_limit=20))
            assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_pattern_ops_lists_every_op_of_every_root():
    rule = next(r for r in load_rules() if r.name == "merge-parallel-convs")
    assert pattern_ops(rule) == {("", "Conv")}
    rule = next(r for r in load_rules() if r.name == "conv-distribute-weight")
    assert pattern_ops(rule) == {("", "Add"), ("", "Conv")}
