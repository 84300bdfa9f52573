"""Equality saturation (optimizer/search/eqsat.py) end to end, and its e-graph.

- the e-graph restores congruence after a union;
- eqsat finds what the greedy pass cannot: a costlier step (enlarging a 1x1 kernel) that lets
  two convolutions merge; the result computes the same outputs on onnxruntime, keeps the
  output names, passes ``check()``, and its trace chains costs from input to result;
- two runs give the same graph; the node, iteration and time limits stop it with the right
  ``stopped_by``; a node that must stay (a random generator) survives extraction;
- where pruning leaves few choices they are compared one by one, with the ILP's result; when
  ``milp`` fails, extraction falls back to greedy and still improves the graph;
- the quick-suite models and random small graphs (hypothesis) compute the same outputs after
  eqsat, never cost more than before, and, when saturation and an exact extraction both
  completed, cost no more than the greedy pass's result.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[2]
for folder in (ROOT, ROOT / "tests", ROOT / "tests" / "rewrite"):  # shared test helpers
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import models  # noqa: E402  (tests/models.py: the random-graph strategy)
from rewrite_helpers import imported, init, ir_graph, ir_input, ir_op, model, rand, tensor  # noqa: E402

from optimizer import onnx_io, runtime  # noqa: E402
from optimizer.cost import AnalyticCost  # noqa: E402
from optimizer.passes.fold import fold_constants  # noqa: E402
from optimizer.passes.rewrite import apply_rules, default_rules  # noqa: E402
from optimizer.rewrite import load_rules  # noqa: E402
from optimizer.rewrite.match import MatchIndex  # noqa: E402
from optimizer.search import extract, extract_egraph  # noqa: E402
from optimizer.search.base import Budget  # noqa: E402
from optimizer.search.egraph import ORIGINAL, EGraph  # noqa: E402
from optimizer.search.eqsat import Saturation, eqsat  # noqa: E402

COST = AnalyticCost()


def _run(graph, budget=None, rules=None):
    result, trace = eqsat(graph, rules or default_rules(), COST, budget or Budget(time_limit=20))
    result.check()
    assert "extraction failed" not in trace.extra.get("kept_input", ""), trace.extra
    return result, trace


def _same_outputs(proto, graph) -> None:
    report = runtime.compare_models(proto, onnx_io.to_proto(graph), num_samples=2)
    assert report.ok, report.summary()


def _chained(trace) -> None:
    """Trace costs run from the input's cost to the result's, each step from the last."""
    if not trace.steps:
        assert trace.cost_after == trace.cost_before
        return
    assert trace.steps[0].cost_before == trace.cost_before
    for a, b in zip(trace.steps, trace.steps[1:]):
        assert b.cost_before == a.cost_after
    assert trace.steps[-1].cost_after == pytest.approx(trace.cost_after)


# ------------------------------------------------------------------ the e-graph


def test_union_restores_congruence():
    x, y = ir_input("x", [2, 3]), ir_input("y", [2, 3])
    fx, fy = ir_op("Relu", x), ir_op("Relu", y)
    gx, gy = ir_op("Neg", fx), ir_op("Neg", fy)
    eg = EGraph()
    for v in (gx, gy):
        eg.add(v)
    assert eg.num_enodes == 6 and eg.class_of(fx) != eg.class_of(fy)
    eg.union(eg.class_of(x), eg.class_of(y))
    eg.rebuild()
    assert eg.class_of(fx) == eg.class_of(fy)  # Relu(x) = Relu(y) once x = y ...
    assert eg.class_of(gx) == eg.class_of(gy)  # ... and so, upward, Neg of them
    assert eg.num_enodes == 4 and eg.num_classes == 3


def test_commutation_rules_are_left_to_the_matcher():
    # given explicitly, x+y = y+x is still left out: e-matching tries both orders anyway
    x, y = ir_input("x", [2, 3]), ir_input("y", [2, 3])
    graph = ir_graph([x, y], [ir_op("Add", x, y)])
    library = [r for r in load_rules() if r.name in ("add-commute", "add-zero")]
    sat = Saturation(graph, MatchIndex(library), COST, Budget())
    assert [r.name for r in sat.rules] == ["add-zero"]
    assert sat.run(time.perf_counter() + 10) == "saturated" and sat.apps == []


# ------------------------------------------------------------------ a costlier step


def _branches_model():
    """An Inception-style block: a 1x1 and a 3x3 convolution of x, concatenated on channels.
    Merging them takes enlarging the 1x1 kernel first, which alone costs more."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1x1"),
        helper.make_node("Conv", ["x", "w2"], ["b"], name="conv3x3", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a", "b"], ["y"], name="concat", axis=1),
    ]
    weights = [init("w1", rand(2, 2, 1, 1, seed=1)), init("w2", rand(3, 2, 3, 3, seed=2))]
    return model(nodes, [tensor("x", [1, 2, 6, 6])], [tensor("y", [1, 5, 6, 6])], weights)


def test_finds_what_greedy_misses():
    proto = _branches_model()
    graph = imported(proto)
    greedy, greedy_trace = apply_rules(graph, default_rules())
    assert greedy_trace == [] and COST(greedy) == COST(graph)
    result, trace = _run(graph)
    assert COST(result) < COST(graph)
    assert [n.op for n in result.nodes()] == ["Conv"]
    rules = [s.rule for s in trace.steps]
    assert rules[0] == "conv-enlarge-kernel" and "concat-convs-sharing-input" in rules
    assert trace.steps[0].nodes_matched == ["conv1x1"]
    assert trace.algorithm == "eqsat" and trace.stopped_by == "saturated"
    # few choices once dominated members are pruned: compared one by one, no ILP
    assert trace.extra["extraction"] == "exhaustive"
    assert trace.extra["ilp_status"].startswith("not needed")
    assert trace.explored == trace.extra["enodes"] > len(graph.nodes())
    assert result.output_names == graph.output_names and result.inputs == graph.inputs
    provenance = {m.provenance for m in result.node_meta.values()}
    assert provenance & set(rules)
    _chained(trace)
    _same_outputs(proto, result)


def test_deterministic():
    graph = imported(_branches_model())
    first, t1 = _run(graph)
    second, t2 = _run(graph)
    assert first.key == second.key
    assert [s.rule for s in t1.steps] == [s.rule for s in t2.steps]
    assert t1.extra["enodes"] == t2.extra["enodes"]


def test_the_ilp_finds_what_comparing_each_choice_finds(monkeypatch):
    graph = imported(_branches_model())
    few, few_trace = _run(graph)
    monkeypatch.setattr(extract_egraph, "EXHAUSTIVE_CHOICES", 0)
    result, trace = _run(graph)
    assert trace.extra["extraction"] == "ilp" and trace.extra["ilp_status"].startswith("optimal")
    assert result.key == few.key and trace.cost_after == few_trace.cost_after


def test_milp_failure_falls_back_to_greedy(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no solver")

    monkeypatch.setattr(extract, "milp", broken)
    monkeypatch.setattr(extract_egraph, "EXHAUSTIVE_CHOICES", 0)
    proto = _branches_model()
    graph = imported(proto)
    result, trace = _run(graph)
    assert trace.extra["extraction"] == "greedy"
    assert "no solver" in trace.extra["ilp_status"]
    assert COST(result) < COST(graph)
    _same_outputs(proto, result)


# ------------------------------------------------------------------ limits


def test_node_limit():
    graph = imported(_branches_model())  # 6 e-nodes: x, two weights, two Convs, the Concat
    result, trace = _run(graph, Budget(max_enodes=6))
    assert trace.stopped_by == "budget"
    assert trace.extra["iterations"] == 0 and result is graph
    result, trace = _run(graph, Budget(max_enodes=12))
    assert trace.stopped_by == "budget" and trace.extra["iterations"] == 1
    assert 12 <= trace.extra["enodes"] <= 12 + 4  # the limit is checked between applications
    assert COST(result) <= COST(graph)


def test_iteration_limit():
    graph = imported(_branches_model())
    result, trace = _run(graph, Budget(max_iterations=1))
    assert trace.stopped_by == "budget" and trace.extra["iterations"] == 1
    assert COST(result) <= COST(graph)  # the merge needs a second iteration


def test_time_limit():
    graph = imported(_branches_model())
    result, trace = _run(graph, Budget(time_limit=0.0))
    assert trace.stopped_by == "time limit" and trace.extra["iterations"] == 0
    assert result is graph and trace.cost_after == trace.cost_before


def test_unchanged_graph_is_returned_itself():
    x = ir_input("x", [2, 3])
    graph = ir_graph([x], [ir_op("Sigmoid", ir_op("Relu", x))])
    result, trace = _run(graph)
    assert result is graph and trace.steps == [] and trace.stopped_by == "saturated"


# ------------------------------------------------------------------ nodes that must stay


def test_random_node_survives():
    # CastLike(x, r) reads the random r only for its type: the rules turn it into x, which
    # would drop r. The Relu(Relu(x)) output still improves.
    nodes = [
        helper.make_node("RandomUniformLike", ["x"], ["r"], seed=1.0),
        helper.make_node("CastLike", ["x", "r"], ["y"]),
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["z"]),
    ]
    shape = [2, 3]
    proto = model(nodes, [tensor("x", shape)], [tensor("y", shape), tensor("z", shape)], opset=18)
    graph = imported(proto)
    assert any(n.unique is not None for n in graph.nodes())
    result, trace = _run(graph)
    assert COST(result) < COST(graph)
    assert "RandomUniformLike" in [n.op for n in result.nodes()]
    assert [n.op for n in result.nodes()].count("Relu") == 1
    _same_outputs(proto, result)


def test_extraction_that_drops_a_random_node_is_refused(monkeypatch):
    # Without the guard on rewrites, CastLike(x, r) = x merges y's class into x's: no graph
    # the e-graph holds keeps r, and eqsat must return its input rather than drop r.
    monkeypatch.setattr(Saturation, "_keeps_needs", lambda self, roots, values: True)
    nodes = [
        helper.make_node("RandomUniformLike", ["x"], ["r"], seed=1.0),
        helper.make_node("CastLike", ["x", "r"], ["y"]),
    ]
    proto = model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    graph = imported(proto)
    result, trace = eqsat(graph, default_rules(), COST, Budget(time_limit=20))
    assert result is graph
    assert "castlike-to-cast" in {a.rule for a in _saturated(graph).apps}
    assert trace.extra["kept_input"].startswith("extraction failed")


def _saturated(graph):
    sat = Saturation(graph, default_rules(), COST, Budget())
    sat.run(time.perf_counter() + 20)
    return sat


# ------------------------------------------------------------------ real and random models


@pytest.mark.torch
@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_v2_tiny", "nasrnn_tiny", "gpt2_tiny"])
def test_quick_models_keep_their_outputs(name):
    pytest.importorskip("torch", reason="exporting the zoo needs the torch extra")
    from benchmarks import models as zoo

    path = zoo.export(name)
    graph, _ = onnx_io.load(path)
    budget = Budget(time_limit=6.0, max_enodes=3000)
    result, trace = _run(graph, budget)
    assert trace.cost_after == COST(result) <= trace.cost_before == COST(graph)
    _chained(trace)
    if result is not graph:
        report = runtime.compare_models(str(path), onnx_io.to_proto(result))
        assert report.ok, report.summary()


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(proto=models.small_models())
def test_random_graphs(proto):
    graph, _ = onnx_io.import_model(proto)
    result, trace = _run(graph, Budget(time_limit=8.0))
    before, after = COST(graph), COST(result)
    assert after <= before
    _chained(trace)
    greedy, _ = apply_rules(graph, default_rules())
    exact = trace.extra.get("ilp_status") == "optimal" or trace.extra.get("extraction") in (
        "forced",
        "exhaustive",
    )
    if trace.stopped_by == "saturated" and exact:  # folded, as the greedy pass's result is
        assert COST(fold_constants(result)) <= COST(greedy) + 1e-6
    out = onnx_io.to_proto(result)
    feed = models.fixed_feed(proto, batch=2)
    for want, got in zip(models.run_ort(proto, feed), models.run_ort(out, feed), strict=True):
        assert want.shape == got.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert [o.name for o in out.graph.output] == [o.name for o in proto.graph.output]


def test_output_names_survive_when_outputs_merge():
    # y = Relu(Relu(x)) and z = Relu(x) become the same value: both names must stay.
    nodes = [
        helper.make_node("Relu", ["x"], ["z"]),
        helper.make_node("Relu", ["z"], ["y"]),
    ]
    proto = model(nodes, [tensor("x", [2, 2])], [tensor("y", [2, 2]), tensor("z", [2, 2])])
    graph = imported(proto)
    result, _ = _run(graph)
    assert result.output_names == ("y", "z")
    assert result.outputs[0] is result.outputs[1]
    out = onnx_io.to_proto(result)
    assert [o.name for o in out.graph.output] == ["y", "z"]
    _same_outputs(proto, result)


def test_float_inputs_only():
    # an int64 path (shape arithmetic) next to float math keeps its dtype through eqsat
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["x", "s"], ["r"]),
        helper.make_node("Mul", ["r", "one"], ["y"]),
    ]
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    proto = model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3])], [one])
    graph = imported(proto)
    result, trace = _run(graph)
    assert COST(result) < COST(graph)
    _same_outputs(proto, result)


def test_fold_batches_are_cut_by_bytes_so_the_deadline_is_checked_between_them():
    from optimizer.ir import DType, Node, TensorType
    from optimizer.ir import graph_input as ir_input
    from optimizer.search.eqsat_fold import _chunks

    x = ir_input("x", TensorType(DType.FLOAT, (1024,)))  # 4 KiB per node below
    batch = [
        (k, Node.make("Relu", [x], {}, output_types=[TensorType(DType.FLOAT, (1024,))]))
        for k in range(5)
    ]
    chunks = _chunks(batch, 8192)
    assert [[e for e, _ in c] for c in chunks] == [[0, 1], [2, 3], [4]]
    assert [[e for e, _ in c] for c in _chunks(batch, 1)] == [[k] for k in range(5)]
    assert _chunks([], 8192) == []


# ------------------------------------------------------------------ multi-root rules


def _rnn_model(steps: int = 4, hidden: int = 128):
    """A NasRNN-like recurrence: h' = tanh(x_t W^T + h U^T), W and U shared by every step
    (128 wide: narrower, reading the weight once saves less than the slices cost).
    The products x_t W^T are independent, so they batch into one; the products h U^T read
    the previous step, so batching two of them would compute a step from itself."""
    nodes, inputs = [], []
    h = "h0"
    for t in range(steps):
        inputs.append(tensor(f"x{t}", [1, hidden]))
        nodes += [
            helper.make_node("Gemm", [f"x{t}", "w"], [f"a{t}"], transB=1),
            helper.make_node("Gemm", [h, "u"], [f"b{t}"], transB=1),
            helper.make_node("Add", [f"a{t}", f"b{t}"], [f"s{t}"]),
            helper.make_node("Tanh", [f"s{t}"], [f"h{t + 1}"]),
        ]
        h = f"h{t + 1}"
    weights = [
        init("w", rand(hidden, hidden, seed=1)),
        init("u", rand(hidden, hidden, seed=2)),
        init("h0", rand(1, hidden, seed=3)),
    ]
    return model(nodes, inputs, [tensor(h, [1, hidden])], weights)


def _batching_rules():
    names = ("gemm-batch-shared-weight-transb", "slice-slice", "concat-concat")
    return MatchIndex([r for r in load_rules() if r.name in names])


def test_products_sharing_a_weight_batch_into_one():
    # greedy batches the four x_t W^T one after another; eqsat must reach the same: pairs
    # in its first iteration, the two pairs in its second (the slices compose by slice-slice)
    proto = _rnn_model()
    graph = imported(proto)
    rules = _batching_rules()
    greedy, steps = apply_rules(graph, rules)
    assert steps and COST(greedy) < COST(graph)
    result, trace = _run(graph, Budget(time_limit=20), rules)
    assert COST(result) <= COST(greedy)
    gemms = [n for n in result.nodes() if n.op == "Gemm"]
    batched = [n for n in gemms if n.inputs[0].type.shape[0] == 4]
    # one batched product; of the h U^T the three over computed states stay (h0 U^T folds)
    assert len(batched) == 1 and len(gemms) == 1 + 3
    assert "gemm-batch-shared-weight-transb" in {s.rule for s in trace.steps}
    _chained(trace)
    _same_outputs(proto, result)


def test_multi_root_rules_take_each_root_once_and_never_their_own_inputs():
    graph = imported(_rnn_model())
    sat = Saturation(graph, _batching_rules(), COST, Budget())
    sat.run(time.perf_counter() + 20)
    batches = [a for a in sat.apps if a.rule == "gemm-batch-shared-weight-transb"]
    assert len(batches) == 3  # (x0, x1), (x2, x3), then the two pairs: 4 products in 3
    eg = sat.eg
    h_products = {
        eg.enodes[e].outs[0]
        for e in eg.iter_enodes()
        if eg.enodes[e].origin == ORIGINAL
        and eg.enodes[e].node.op == "Gemm"
        and not eg.enodes[e].node.inputs[0].node.is_input
    }
    assert len(h_products) == 4
    for app in batches:  # no batch of two h U^T: each reads the previous one
        assert not {eg.find(r) for r in app.roots} & {eg.find(c) for c in h_products}
    roots = [eg.find(r) for a in batches for r in a.roots]
    assert len(roots) == len(set(roots))  # each class a root of one application at most


def test_data_movement_folds_in_numpy_as_onnxruntime_would():
    from optimizer.ir import Graph, TensorData, constant
    from optimizer.passes.fold import fold_constants
    from optimizer.search.eqsat_fold import _move_data

    w = constant(TensorData.from_array(rand(4, 3, 1, 2, seed=5).astype(np.float32)))
    pads = constant(TensorData.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 2], dtype=np.int64)))
    fill = constant(TensorData.from_array(np.array(2.5, dtype=np.float32)))
    values = [
        ir_op("Concat", w, w, axis=1),
        ir_op("Transpose", w, perm=[3, 1, 0, 2]),
        ir_op("Transpose", w),
        ir_op("Pad", w, pads),
        ir_op("Pad", w, pads, fill),
    ]
    for v in values:
        mine = _move_data(v.node)
        runtime_value = fold_constants(Graph((), (v,), ("y",))).outputs[0].constant.numpy()
        assert mine is not None and mine.dtype == runtime_value.dtype
        np.testing.assert_array_equal(mine, runtime_value)
    reflect = ir_op("Pad", w, pads, mode="reflect")
    assert _move_data(reflect.node) is None  # left to onnxruntime
