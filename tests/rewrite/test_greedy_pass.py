"""The greedy ``apply-rules`` pass on small ONNX models: same outputs on onnxruntime, lower cost,
a sound IR after every step."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from rewrite_helpers import FIXTURES, example_rules, imported, init, model, rand, rule, tensor

import optimizer
from optimizer import onnx_io, runtime
from optimizer.passes import PASSES, run_passes
from optimizer.passes import rewrite as rewrite_pass
from optimizer.passes.rewrite import AnalyticCost, apply_rules, default_rules
from optimizer.rewrite import parse_rules


def _checked_steps(monkeypatch):
    """Make every application in the greedy loop run the IR checker on its result."""
    from optimizer.rewrite import apply as apply_module

    original = apply_module.apply_match
    applied = []

    def checked(graph, match, **kwargs):
        result = original(graph, match, **kwargs)
        if result is not None:
            result.check()
            applied.append(match.rule.name)
        return result

    monkeypatch.setattr(rewrite_pass, "apply_match", checked)
    return applied


def _optimize(proto, rules, monkeypatch, **kwargs):
    applied = _checked_steps(monkeypatch)
    graph = imported(proto)
    cost = AnalyticCost()
    before = cost(graph)
    result, trace = apply_rules(graph, rules, **kwargs)
    result.check()
    out = onnx_io.to_proto(result)
    report = runtime.compare_models(proto, out, num_samples=2)
    assert report.ok, report.summary()
    assert len(applied) >= len(trace)
    return result, trace, before, cost(result)


def _conv_bn_model(conv_bias: bool = False):
    w = rand(4, 3, 3, 3, seed=1)
    scale, bias = rand(4, seed=2, low=0.5, high=1.5), rand(4, seed=3)
    mean, var = rand(4, seed=4), rand(4, seed=5, low=0.5, high=1.5)
    conv_inputs = ["x", "w", "cb"] if conv_bias else ["x", "w"]
    nodes = [
        helper.make_node(
            "Conv", conv_inputs, ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]
        ),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["y"]),
    ]
    inits = [init("w", w), init("s", scale), init("b", bias), init("m", mean), init("v", var)]
    if conv_bias:
        inits.append(init("cb", rand(4, seed=6)))
    return model(nodes, [tensor("x", ["N", 3, 8, 8])], [tensor("y", ["N", 4, 8, 8])], inits)


@pytest.mark.parametrize("conv_bias", [False, True])
def test_conv_batchnorm_fold(monkeypatch, conv_bias):
    proto = _conv_bn_model(conv_bias)
    result, trace, before, after = _optimize(proto, example_rules().values(), monkeypatch)
    ops = sorted(n.op for n in result.nodes())
    assert ops == ["Conv", "Relu"]  # the weight arithmetic was folded between rounds
    name = "fold-conv-bias-batchnorm" if conv_bias else "fold-conv-batchnorm"
    assert [t["rule"] for t in trace] == [name]
    assert after < before
    step = trace[0]
    assert step["cost_after"] < step["cost_before"]
    assert len(step["nodes_matched"]) == 2
    (conv,) = [n for n in result.nodes() if n.op == "Conv"]
    assert result.node_meta[conv].provenance == name


def test_matmuls_sharing_an_input_merge(monkeypatch):
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"]),
        helper.make_node("MatMul", ["x", "w2"], ["b"]),
        helper.make_node("Relu", ["a"], ["ra"]),
    ]
    inits = [init("w1", rand(8, 3, seed=1)), init("w2", rand(8, 5, seed=2))]
    outs = [tensor("ra", ["N", 3]), tensor("b", ["N", 5])]
    proto = model(nodes, [tensor("x", ["N", 8])], outs, inits)
    # The analytic cost calls this a tie (one launch saved, one Split added): nothing happens.
    _, trace, before, after = _optimize(proto, example_rules().values(), monkeypatch)
    assert trace == [] and after == before

    # A cost where MatMul launches dominate takes the merge.
    def matmul_heavy(graph):
        return sum(10 if n.op == "MatMul" else 1 for n in graph.nodes())

    rules = example_rules().values()
    result, trace, _, _ = _optimize(proto, rules, monkeypatch, cost=matmul_heavy)
    assert [t["rule"] for t in trace] == ["merge-matmuls-sharing-input"]
    # the Concat of the weights is still there at the step; it folds after the round
    assert trace[0]["cost_before"] == 21 and trace[0]["cost_after"] == 13
    assert sorted(n.op for n in result.nodes()) == ["MatMul", "Relu", "Split"]
    assert result.output_names == ("ra", "b")


def test_identities_disappear_and_graph_outputs_keep_names(monkeypatch):
    nodes = [
        helper.make_node("Mul", ["one", "x"], ["m"]),
        helper.make_node("Transpose", ["m"], ["t1"], perm=[1, 2, 0]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[2, 0, 1]),
        helper.make_node("Add", ["t2", "zero"], ["y"]),
        helper.make_node("Transpose", ["t2"], ["z"], perm=[0, 2, 1]),
    ]
    inits = [init("one", np.ones((1, 1, 1), np.float32)), init("zero", np.zeros(4, np.float32))]
    outs = [tensor("y", [2, 3, 4]), tensor("z", [2, 4, 3])]
    proto = model(nodes, [tensor("x", [2, 3, 4])], outs, inits)
    result, trace, before, after = _optimize(proto, example_rules().values(), monkeypatch)
    assert sorted(t["rule"] for t in trace) == ["add-zero", "mul-by-one", "transposes-cancel"]
    assert [n.op for n in result.nodes()] == ["Transpose"]
    assert result.outputs[0] is result.inputs[0] and result.output_names == ("y", "z")
    assert after < before


def test_shape_changing_match_is_left_alone(monkeypatch):
    nodes = [helper.make_node("Add", ["x", "zero"], ["y"])]
    zeros = init("zero", np.zeros((3, 4), np.float32))
    proto = model(nodes, [tensor("x", [4])], [tensor("y", [3, 4])], [zeros])
    result, trace, before, after = _optimize(proto, example_rules().values(), monkeypatch)
    assert trace == [] and after == before
    assert [n.op for n in result.nodes()] == ["Add"]


def test_axioms_are_never_applied():
    text = (FIXTURES / "examples.rules").read_text()
    axioms = parse_rules(text, family="axioms")
    proto = _conv_bn_model()
    graph = imported(proto)
    result, trace = apply_rules(graph, axioms)
    assert trace == [] and result is graph


def test_no_rules_is_a_no_op(tmp_path):
    graph = imported(_conv_bn_model())
    assert apply_rules(graph, [])[0] is graph
    assert default_rules(tmp_path).rules == []
    assert default_rules(tmp_path / "missing").rules == []


def test_only_strictly_improving_steps_are_taken(monkeypatch):
    # Commuting an Add costs the same: the greedy pass never takes it, and terminates.
    commute = rule("rule add-commute:  # c\n    match: Add(x, y)\n    rewrite: Add(y, x)")
    nodes = [helper.make_node("Add", ["x", "y"], ["z"])]
    proto = model(nodes, [tensor("x", [3]), tensor("y", [3])], [tensor("z", [3])])
    result, trace, before, after = _optimize(proto, [commute], monkeypatch)
    assert trace == [] and after == before


def test_custom_cost_and_step_budget(monkeypatch):
    nodes = [
        helper.make_node("Mul", ["x", "one"], ["a"]),
        helper.make_node("Mul", ["a", "one"], ["b"]),
        helper.make_node("Mul", ["b", "one"], ["y"]),
    ]
    proto = model(
        nodes, [tensor("x", [3])], [tensor("y", [3])], [init("one", np.ones(1, np.float32))]
    )
    graph = imported(proto)
    rules = example_rules().values()
    one_step, trace = apply_rules(graph, rules, max_steps=1)
    assert len(trace) == 1 and len(one_step.nodes()) == 2
    node_count = lambda g: len(g.nodes())  # noqa: E731
    result, trace = apply_rules(graph, rules, cost=node_count)
    assert [t["cost_after"] for t in trace] == [2, 1, 0]
    assert result.outputs == result.inputs


def test_pass_runs_in_the_default_pipeline(monkeypatch, tmp_path):
    assert PASSES.index("apply-rules") > PASSES.index("fold-constants")
    monkeypatch.setattr(rewrite_pass, "rules_dir", lambda: FIXTURES)
    proto = _conv_bn_model()
    optimized = optimizer.optimize(proto)  # checks the result numerically itself
    assert sorted(n.op_type for n in optimized.graph.node) == ["Conv", "Relu"]


def test_broken_library_warns_and_is_skipped(tmp_path):
    (tmp_path / "broken.rules").write_text("rule oops:\n    match: Relu(x)\n    rewrite: x\n")
    with pytest.warns(UserWarning, match="not applied"):
        assert default_rules(tmp_path).rules == []


def _mlp_model(layers: int = 40):
    """A 200-node model: per layer MatMul, Add, Relu, Mul by one, Transpose pair."""
    nodes, inits = [], []
    h = "x"
    for i in range(layers):
        inits += [init(f"w{i}", rand(16, 16, seed=i)), init(f"b{i}", rand(16, seed=100 + i))]
        nodes += [
            helper.make_node("MatMul", [h, f"w{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"ad{i}"]),
            helper.make_node("Relu", [f"ad{i}"], [f"r{i}"]),
            helper.make_node("Transpose", [f"r{i}"], [f"t{i}"], perm=[1, 0]),
            helper.make_node("Transpose", [f"t{i}"], [f"h{i}"], perm=[1, 0]),
        ]
        h = f"h{i}"
    return model(nodes, [tensor("x", ["N", 16])], [tensor(h, ["N", 16])], inits)


def test_pipeline_on_a_200_node_model_never_grows_it():
    # How long apply-rules takes is a benchmark question (tests never assert on wall-clock
    # time); here: the full pipeline ends no larger than the clean-up passes alone.
    proto = _mlp_model()
    graph = imported(proto)
    assert len(graph.nodes()) == 200
    without = [p for p in PASSES if p != "apply-rules"]
    base, _ = run_passes(graph, without)
    full, results = run_passes(graph, PASSES)
    assert len(full.nodes()) <= len(base.nodes())
    assert any(r.name == "apply-rules" for r in results)


def test_greedy_with_fixture_rules_on_the_200_node_model(monkeypatch):
    proto = _mlp_model()
    result, trace, before, after = _optimize(proto, example_rules().values(), monkeypatch)
    assert len(trace) == 40 and {t["rule"] for t in trace} == {"transposes-cancel"}
    assert len(result.nodes()) == 120 and after < before


def test_trace_records_node_names(monkeypatch):
    nodes = [helper.make_node("Mul", ["x", "one"], ["y"], name="scale_by_one")]
    proto = model(
        nodes, [tensor("x", [3], TensorProto.FLOAT)], [tensor("y", [3])],
        [init("one", np.ones(1, np.float32))],
    )  # fmt: skip
    _, trace, _, _ = _optimize(proto, example_rules().values(), monkeypatch)
    assert trace[0]["nodes_matched"] == ["scale_by_one"]
