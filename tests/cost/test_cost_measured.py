"""The measured cost model: per-node onnxruntime timings, their signatures and their cache."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest
from cost_helpers import SessionCounter, const, f32, graph, imported, mlp_graph, onnx_cnn_model, op

from optimizer.cost import isolate
from optimizer.cost.analytic import AnalyticCost
from optimizer.cost.cache import TIMINGS_FILE
from optimizer.cost.device import DeviceSpec
from optimizer.cost.measured import MeasuredCost
from optimizer.ir import DType, Node, OpaqueType, TensorType
from optimizer.ir import graph_input as ir_input

#: A quick timing: the tests check behaviour, never how long anything took.
QUICK = {"sample_seconds": 0.0002, "samples": 2, "warmup": 1}
#: The fallback of untimeable nodes in tests: known weights, no calibration sweep.
FALLBACK = AnalyticCost(launch_overhead=1e-6, bytes_weight=1e-9, flop_weight=1e-10,
                        units="seconds")  # fmt: skip
DEVICE = DeviceSpec("cpu", threads=1)


def measured(tmp_path, **kwargs) -> MeasuredCost:
    """A measured model; fusion-awareness off unless asked (tested on its own below)."""
    kwargs.setdefault("fusion", False)
    return MeasuredCost(DEVICE, cache=tmp_path, fallback=FALLBACK, **QUICK, **kwargs)


def test_prices_every_node_once_and_sums_the_non_free_ones(tmp_path):
    g = mlp_graph()
    model = measured(tmp_path)
    total = model(g)
    order = g.nodes()
    free = model.free_nodes(order)
    assert [n.op for n in free] == ["Relu"]  # Relu of a constant bias: folded away
    priced = [n for n in order if n not in free]
    assert total == pytest.approx(sum(model.node_cost(n) for n in priced))
    assert all(model.estimate(n).source == "timed" for n in priced)
    assert all(model.node_cost(n) > 0 for n in priced)
    # Memoized: pricing again times nothing.
    timed = model.stats["timed"]
    assert model(g) == total and model.stats["timed"] == timed


def test_second_run_hits_the_disk_cache_without_any_session(tmp_path, monkeypatch):
    g = mlp_graph()
    first = measured(tmp_path)
    total = first(g)
    timed = first.stats["timed"]
    del first  # new timings are flushed when the model goes away (or at exit)
    gc.collect()
    assert (tmp_path / TIMINGS_FILE).is_file()
    counter = SessionCounter(monkeypatch)
    second = measured(tmp_path)  # a new model: nothing in memory, only the file
    assert second(g) == pytest.approx(total)
    assert counter.count == 0
    assert second.stats["timed"] == 0
    # MatMul, Relu and one Add: both Adds add a constant vector (the second one's is
    # computed from constants, which onnxruntime folds), so they share a signature.
    assert second.stats["cache"] == timed == 3
    priced = [n for n in g.nodes() if n not in second.free_nodes(g.nodes())]
    assert {second.estimate(n).source for n in priced} == {"cache"}


def test_identical_signatures_are_timed_once(tmp_path):
    x = ir_input("x", f32(8, 8))
    a = op("Relu", [x], f32(8, 8)).output
    b = op("Relu", [op("Neg", [x], f32(8, 8)).output], f32(8, 8)).output
    model = measured(tmp_path)
    model(graph([a, b], [x]))
    assert model.stats["timed"] == 2  # Neg, and one Relu for both Relu nodes


def _key(node: Node, device: dict | None = None, **kwargs) -> str:
    sig = isolate.signature(node, {"": 17}, **kwargs)
    return sig.key(device or DEVICE.key())


def test_cache_key_separates_shapes_attributes_constants_and_devices():
    x8, x16 = ir_input("x", f32(1, 8)), ir_input("x", f32(1, 16))
    relu8, relu16 = op("Relu", [x8], f32(1, 8)), op("Relu", [x16], f32(1, 16))
    assert _key(relu8) != _key(relu16)
    x = ir_input("x", f32(2, 3, 4))
    t1 = op("Transpose", [x], f32(4, 3, 2), perm=[2, 1, 0])
    t2 = op("Transpose", [x], f32(3, 2, 4), perm=[1, 0, 2])
    assert _key(t1) != _key(t2)
    # Integer constants shape the kernel: their values count; large float weights do not.
    r1 = op("Reshape", [x, const(np.array([6, 4]))], f32(6, 4))
    r2 = op("Reshape", [x, const(np.array([4, 6]))], f32(4, 6))
    assert _key(r1) != _key(r2)
    w1 = const(np.ones((4, 32), np.float32))
    w2 = const(np.full((4, 32), 2.0, np.float32))
    assert _key(op("MatMul", [x, w1], f32(2, 3, 32))) == _key(op("MatMul", [x, w2], f32(2, 3, 32)))
    # A weight that is an input instead of a constant is another kernel set-up.
    w_in = ir_input("w", f32(4, 32))
    with_input = op("MatMul", [x, w_in], f32(2, 3, 32))
    assert _key(with_input) != _key(op("MatMul", [x, w1], f32(2, 3, 32)))
    # Provider, threads and onnxruntime version are part of the key.
    cpu = DEVICE.key()
    assert _key(relu8, cpu) != _key(relu8, {**cpu, "provider": "CUDAExecutionProvider"})
    assert _key(relu8, cpu) != _key(relu8, {**cpu, "threads": 7})
    assert _key(relu8, cpu) != _key(relu8, {**cpu, "onnxruntime": "0.0"})
    assert _key(relu8, cpu) == _key(relu8, dict(cpu))


def test_cache_folder_follows_the_environment_and_the_argument(tmp_path, monkeypatch):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(env_dir))
    MeasuredCost(DEVICE, fallback=FALLBACK, fusion=False, **QUICK).prefetch(mlp_graph().nodes())
    assert (env_dir / TIMINGS_FILE).is_file()
    measured(arg_dir).prefetch(mlp_graph().nodes())
    assert (arg_dir / TIMINGS_FILE).is_file()
    entries = json.loads((arg_dir / TIMINGS_FILE).read_text())["entries"]
    assert sorted(e["op"].split("(")[0] for e in entries.values()) == [
        # prefetch prices the foldable Relu too; both Adds add a constant vector (one
        # computed from constants, which onnxruntime folds): they share a signature
        "Add", "MatMul", "Relu", "Relu"
    ]  # fmt: skip


def test_damaged_cache_file_is_ignored(tmp_path):
    (tmp_path / TIMINGS_FILE).write_text("{not json")
    model = measured(tmp_path)
    assert model(mlp_graph()) > 0
    model.save()
    assert json.loads((tmp_path / TIMINGS_FILE).read_text())["entries"]


def test_symbolic_dims_are_bound_to_one_or_to_a_binding(tmp_path):
    g = imported(onnx_cnn_model())  # input x: [batch, 3, 16, 16]
    model = measured(tmp_path)
    model(g)
    assert model.symbols == {"batch"}
    conv = next(n for n in g.nodes() if n.op == "Conv")
    built = isolate.build(conv, {"": 17})
    assert next(iter(built.feeds.values())).shape == (1, 3, 16, 16)
    built4 = isolate.build(conv, {"": 17}, bindings={"batch": 4})
    assert next(iter(built4.feeds.values())).shape == (4, 3, 16, 16)
    assert _key(conv) != _key(conv, bindings={"batch": 4})
    bound = measured(tmp_path, bindings={"batch": 4})
    assert bound.node_cost(conv) > 0 and bound.estimate(conv).source == "timed"


def test_untimeable_nodes_fall_back_to_the_calibrated_analytic_estimate(tmp_path):
    x = ir_input("x", f32(4, 4))
    unranked = ir_input("u", TensorType(DType.FLOAT, None))
    seq = ir_input("s", OpaqueType(b"sequence"))
    nodes = [
        op("Relu", [unranked], TensorType(DType.FLOAT, None)),  # unknown rank
        Node.make("SequenceLength", [seq], output_types=[TensorType(DType.INT64, ())]),
        Node.make("If", [op("Greater", [x, x], TensorType(DType.BOOL, (4, 4))).output],
                  {"then_branch": _subgraph(), "else_branch": _subgraph()},
                  output_types=[f32(4, 4)]),  # fmt: skip
    ]
    model = measured(tmp_path)
    for node in nodes:
        estimate = model.estimate(node)
        assert estimate.source == "fallback", node
        assert estimate.reason
        assert estimate.seconds == FALLBACK.node_cost(node)


def _subgraph():
    from onnx import TensorProto, helper

    from optimizer.ir import Subgraph

    body = helper.make_graph(
        [helper.make_node("Constant", [], ["o"], value_float=1.0)], "body", [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [])],
    )  # fmt: skip
    return Subgraph(body.SerializeToString())


def test_ops_onnxruntime_refuses_fall_back_and_the_refusal_is_cached(tmp_path, monkeypatch):
    x = ir_input("x", f32(4, 4))
    custom = Node.make("Frobnicate", [x], domain="example.custom", output_types=[f32(4, 4)])
    model = measured(tmp_path)
    estimate = model.estimate(custom)
    assert estimate.source == "fallback"
    assert "onnxruntime" in estimate.reason
    model.save()
    counter = SessionCounter(monkeypatch)
    again = measured(tmp_path)
    assert again.estimate(custom).source == "fallback"
    assert counter.count == 0  # the refusal was remembered, not retried


def test_default_fallback_is_the_calibrated_analytic_model(tmp_path, monkeypatch):
    from optimizer.cost import calibrate

    calibration = calibrate.Calibration((("conv", 1e-11), ("matmul", 2e-11), ("other", 3e-10)),
                                        1e-10, 2e-6)  # fmt: skip
    seen = []

    def fake(device, *, cache_dir=None, recalibrate=False, progress=None):
        seen.append((device, cache_dir))
        return calibration

    monkeypatch.setattr(calibrate, "calibration_for", fake)
    model = MeasuredCost(DEVICE, cache=tmp_path, fusion=False, **QUICK)
    node = op("Relu", [ir_input("u", TensorType(DType.FLOAT, None))], TensorType(DType.FLOAT, None))
    expected = AnalyticCost.from_calibration(calibration).node_cost(node)
    assert model.estimate(node).seconds == expected
    assert seen == [(DEVICE, tmp_path)]


def test_runtime_shape_operands_get_values_that_keep_the_kernel_valid(tmp_path):
    x = ir_input("x", f32(2, 3, 4))
    shape = ir_input("shape", TensorType(DType.INT64, (2,)))  # computed at run time
    reshape = op("Reshape", [x, shape], f32(6, 4))
    built = isolate.build(reshape, {"": 17})
    assert list(built.feeds["in1"]) == [6, 4]
    assert measured(tmp_path).estimate(reshape).source == "timed"


def _conv_relu():
    rng = np.random.default_rng(0)
    x = ir_input("x", f32(1, 16, 12, 12))
    w = const(rng.standard_normal((16, 16, 3, 3)).astype(np.float32))
    conv = op("Conv", [x, w], f32(1, 16, 12, 12), pads=[1, 1, 1, 1])
    relu = op("Relu", [conv.output], f32(1, 16, 12, 12))
    neg = op("Neg", [relu.output], f32(1, 16, 12, 12))
    tail = op("Relu", [neg.output], f32(1, 16, 12, 12))  # behind a Neg: nothing to fuse into
    return graph([tail.output], [x]), conv, relu, tail


def test_consumers_onnxruntime_fuses_into_their_producer_cost_nothing(tmp_path):
    g, conv, relu, tail = _conv_relu()
    aware = measured(tmp_path, fusion=True)
    assert aware.estimate(relu).source == "fused" and aware.node_cost(relu) == 0.0
    assert aware.estimate(tail).source == "timed" and aware.node_cost(tail) > 0
    assert aware.estimate(conv).source == "timed"
    total = aware(g)
    aware.save()
    plain = measured(tmp_path)  # same cache: Conv, Neg and the last Relu read back from it
    assert plain.estimate(relu).source == "cache"  # same signature as the last Relu
    assert plain.node_cost(relu) > 0
    assert plain(g) == pytest.approx(total + plain.node_cost(relu))
    assert aware.stats["fused"] == 1


def test_fusion_decisions_are_cached_on_disk(tmp_path, monkeypatch):
    g, conv, relu, tail = _conv_relu()
    first = measured(tmp_path, fusion=True)
    first(g)
    first.save()
    counter = SessionCounter(monkeypatch)
    second = measured(tmp_path, fusion=True)
    assert second(g) == pytest.approx(first(g))
    assert second.estimate(relu).source == "fused"
    assert counter.count == 0


def test_is_a_cost_model_and_takes_a_device_name(tmp_path):
    from optimizer.cost import CostModel

    model = MeasuredCost("cpu", cache=tmp_path, fallback=FALLBACK, **QUICK)
    assert isinstance(model, CostModel)
    assert model.device == DeviceSpec("cpu")
    assert MeasuredCost("auto", cache=tmp_path).device.device in ("cpu", "cuda")
    with pytest.raises(Exception, match="unknown device 'tpu'"):
        MeasuredCost("tpu", cache=tmp_path)


def test_unbound_nodes_are_built_at_an_opset_their_signature_fits(tmp_path):
    x = ir_input("x", f32(2, 8, 4))
    axes = const(np.array([-1]))
    mean = op("ReduceMean", [x, axes], f32(2, 8, 1), keepdims=1)  # axes as input: opset >= 18
    model = measured(tmp_path)  # no graph bound: the default opset is 17
    assert model.estimate(mean).source == "timed"
    bound = measured(tmp_path / "bound").bind(graph([mean.output], [x], opset=17))
    estimate = bound.estimate(mean)  # a model that says 17 gets 17, and onnxruntime refuses it
    assert estimate.source == "fallback" and "onnxruntime" in estimate.reason
