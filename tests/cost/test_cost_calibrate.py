"""Calibration of the analytic model: the non-negative fit, one real sweep, the stored result,
and the uncalibrated default's fixed weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cost_helpers import f32, mlp_graph, op

from optimizer.cost import calibrate
from optimizer.cost.analytic import (
    LAUNCH_OVERHEAD,
    OTHER_FLOP_WEIGHT,
    AnalyticCost,
    node_features,
    op_class,
)
from optimizer.cost.cache import CALIBRATION_FILE
from optimizer.cost.calibrate import CLASSES, Calibration, Sample, fit
from optimizer.cost.device import DeviceSpec
from optimizer.info import node_flops
from optimizer.ir import graph_input as ir_input

TRUE = {"conv": 8e-12, "matmul": 2e-11, "other": 3e-10, "byte": 5e-11, "kernel": 1.5e-6}


def synthetic(n: int, seed: int = 0, noise: float = 0.0, **true: float) -> list[Sample]:
    """Samples whose times follow the linear model with weights ``true`` exactly (or with
    multiplicative noise)."""
    weights = {**TRUE, **true}
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        cls = CLASSES[i % len(CLASSES)]
        flops = float(10 ** rng.uniform(2, 9))
        moved = float(10 ** rng.uniform(2, 8))
        seconds = weights[cls] * flops + weights["byte"] * moved + weights["kernel"]
        seconds *= 1 + noise * rng.standard_normal()
        samples.append(Sample(f"s{i}", cls, flops, moved, seconds))
    return samples


def test_fit_recovers_known_parameters_from_exact_timings():
    c = fit(synthetic(30))
    per_flop = dict(c.seconds_per_flop)
    for cls in CLASSES:
        assert per_flop[cls] == pytest.approx(TRUE[cls], rel=1e-6)
    assert c.seconds_per_byte == pytest.approx(TRUE["byte"], rel=1e-6)
    assert c.seconds_per_kernel == pytest.approx(TRUE["kernel"], rel=1e-6)
    assert c.median_rel_error < 1e-8


def test_fit_with_noise_stays_close_and_never_goes_negative():
    c = fit(synthetic(60, seed=1, noise=0.05, conv=0.0))  # conv FLOPs are free here
    per_flop = dict(c.seconds_per_flop)
    assert all(w >= 0 for w in [*per_flop.values(), c.seconds_per_byte, c.seconds_per_kernel])
    assert per_flop["conv"] < 0.1 * TRUE["conv"]
    assert per_flop["matmul"] == pytest.approx(TRUE["matmul"], rel=0.2)
    assert c.seconds_per_kernel == pytest.approx(TRUE["kernel"], rel=0.2)
    assert c.median_rel_error < 0.1


def test_fit_refuses_no_samples():
    with pytest.raises(Exception, match="at least one"):
        fit([])


def test_calibration_round_trips_through_json():
    c = fit(synthetic(12))
    again = Calibration.from_json(json.loads(json.dumps(c.to_json())))
    assert again.seconds_per_flop == c.seconds_per_flop
    assert again.seconds_per_kernel == c.seconds_per_kernel
    assert again.samples == c.samples


def test_real_short_sweep_is_stored_per_machine_and_reused(tmp_path, monkeypatch):
    device = DeviceSpec("cpu", threads=1)
    nodes = calibrate.sweep_nodes()
    few = [nodes[i] for i in (0, 5, 6, 11, 12, 13, 16, 20)]  # MatMul, Conv, Add, Relu, Transpose
    real_sweep = calibrate.sweep
    monkeypatch.setattr(
        calibrate, "sweep",
        lambda device, progress=None: real_sweep(device, nodes=few, sample_seconds=5e-4,
                                                 samples=3),
    )  # fmt: skip
    c = calibrate.calibration_for(device, cache_dir=tmp_path)
    assert len(c.samples) == len(few) and all(s.seconds > 0 for s in c.samples)
    assert c.device == device.key()
    weights = [w for _, w in c.seconds_per_flop] + [c.seconds_per_byte, c.seconds_per_kernel]
    assert all(w >= 0 for w in weights) and any(w > 0 for w in weights)
    stored = json.loads((tmp_path / CALIBRATION_FILE).read_text())["entries"]
    assert list(stored) == [json.dumps(device.key(), sort_keys=True)]

    def no_sweep(*args, **kwargs):
        raise AssertionError("the stored calibration should have been used")

    monkeypatch.setattr(calibrate, "sweep", no_sweep)
    again = calibrate.calibration_for(device, cache_dir=tmp_path)
    assert again.seconds_per_flop == c.seconds_per_flop
    model = AnalyticCost.calibrated("cpu", threads=1, cache_dir=tmp_path)
    assert model.units == "seconds"
    assert model.launch_overhead == c.seconds_per_kernel
    # Another thread count is another device: it needs its own sweep.
    with pytest.raises(AssertionError, match="stored calibration"):
        calibrate.calibration_for(DeviceSpec("cpu", threads=2), cache_dir=tmp_path)


def test_calibrated_model_prices_nodes_with_the_fitted_weights():
    c = fit(synthetic(12))
    model = AnalyticCost.from_calibration(c)
    x = ir_input("x", f32(16, 64))
    node = op("Relu", [x], f32(16, 64))
    flops, read, written = node_features(node)
    expected = TRUE["other"] * flops + TRUE["byte"] * (read + written) + TRUE["kernel"]
    assert model.node_cost(node) == pytest.approx(expected, rel=1e-6)
    mm = mlp_graph().nodes()[0]
    assert mm.op == "MatMul"
    flops, read, written = node_features(mm)
    expected = TRUE["matmul"] * flops + TRUE["byte"] * (read + written) + TRUE["kernel"]
    assert model.node_cost(mm) == pytest.approx(expected, rel=1e-6)


def test_uncalibrated_default_weights():
    """One dense FLOP, one byte read or written: one unit each; other ops' FLOPs cost
    OTHER_FLOP_WEIGHT; a launch LAUNCH_OVERHEAD."""
    model = AnalyticCost()
    assert model.units == "flop-equivalents"
    g = mlp_graph()
    for node in g.nodes():
        written = sum(np.prod(v.type.shape) * 4 for v in node.outputs)
        read = sum(np.prod(v.type.shape) * 4 for v in node.inputs)
        factor = 1.0 if op_class(node.op) == "matmul" else OTHER_FLOP_WEIGHT
        expected = factor * node_flops(node) + LAUNCH_OVERHEAD + written + read
        assert model.node_cost(node) == pytest.approx(expected)
    free = model.free_nodes(g.nodes())
    assert model(g) == sum(model.node_cost(n) for n in g.nodes() if n not in free)


def test_partial_weights_scale_together():
    """Weights given in another unit (seconds) keep the default ratios: a byte read costs like
    a byte written and an elementwise FLOP OTHER_FLOP_WEIGHT dense ones."""
    model = AnalyticCost(launch_overhead=1e-6, bytes_weight=1e-9, flop_weight=1e-10)
    x = ir_input("x", f32(16, 64))
    node = op("Relu", [x], f32(16, 64))
    flops, read, written = node_features(node)
    expected = OTHER_FLOP_WEIGHT * 1e-10 * flops + 1e-9 * (read + written) + 1e-6
    assert model.node_cost(node) == pytest.approx(expected)


def test_default_charges_the_weight_each_product_reads():
    """Two matrix-vector products of one weight cost more than one product of both rows: the
    weight bytes each reads dominate at batch 1 (what makes batching them worth it)."""
    model = AnalyticCost()
    w = ir_input("w", f32(512, 512))
    x1, x2, both = ir_input("x1", f32(1, 512)), ir_input("x2", f32(1, 512)), f32(2, 512)
    apart = [op("MatMul", [x, w], f32(1, 512)) for x in (x1, x2)]
    stacked = op("Concat", [x1, x2], both, axis=0)
    batched = op("MatMul", [stacked.output, w], both)
    parts = [op("Slice", [batched.output], f32(1, 512)) for _ in range(2)]
    together = [stacked, batched, *parts]
    assert sum(map(model.node_cost, together)) < sum(map(model.node_cost, apart))


def test_default_prices_average_pooling_as_a_depthwise_conv_as_a_gain():
    """NASNet's 3x3 average pools (count_include_pad=0) are faster on onnxruntime as depthwise
    convolutions (the rule audit: 1.16x end to end); the default model must see that, or no
    search takes the rewrite."""
    from onnx import TensorProto, helper

    from optimizer import onnx_io
    from optimizer.passes.rewrite import apply_rules
    from optimizer.rewrite import load_rules

    (rule,) = [r for r in load_rules() if r.name == "avgpool-as-depthwise-conv"]
    pool = helper.make_node(
        "AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0
    )
    shape = [1, 44, 28, 28]
    model = helper.make_model(
        helper.make_graph(
            [pool], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )  # fmt: skip
    graph, _ = onnx_io.import_model(model, None)
    result, trace = apply_rules(graph, [rule], cost=AnalyticCost())
    assert [step["rule"] for step in trace] == ["avgpool-as-depthwise-conv"]
    assert "Conv" in {n.op for n in result.nodes()}
