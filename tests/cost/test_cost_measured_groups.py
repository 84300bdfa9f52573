"""The measured cost model prices fusions across nodes (Add + LayerNormalization) by readers."""

from __future__ import annotations

import numpy as np
import pytest
from cost_helpers import SessionCounter, const, f32, graph, op

from optimizer.cost.analytic import AnalyticCost
from optimizer.cost.device import DeviceSpec
from optimizer.cost.measured import MeasuredCost
from optimizer.ir import graph_input as ir_input

QUICK = {"sample_seconds": 0.0002, "samples": 2, "warmup": 1}
FALLBACK = AnalyticCost(launch_overhead=1e-6, bytes_weight=1e-9, flop_weight=1e-10,
                        units="seconds")  # fmt: skip
DEVICE = DeviceSpec("cpu", threads=1)
SHAPE = (1, 8, 32)


def measured(tmp_path, **kwargs) -> MeasuredCost:
    return MeasuredCost(DEVICE, cache=tmp_path, fallback=FALLBACK, **QUICK, **kwargs)


def _residual_norm(extra_reader: bool, axis: int = -1):
    """LayerNormalization(x + y), the sum also read by a Neg when ``extra_reader`` (then
    onnxruntime cannot fuse the pair into SkipLayerNormalization)."""
    rng = np.random.default_rng(0)
    x, y = ir_input("x", f32(*SHAPE)), ir_input("y", f32(*SHAPE))
    width = SHAPE[axis]
    scale = const(rng.standard_normal(width).astype(np.float32))
    bias = const(rng.standard_normal(width).astype(np.float32))
    add = op("Add", [x, y], f32(*SHAPE))
    norm = op("LayerNormalization", [add.output, scale, bias], f32(*SHAPE), axis=axis)
    outputs = [norm.output]
    if extra_reader:
        outputs.append(op("Neg", [add.output], f32(*SHAPE)).output)
    return graph(outputs, [x, y]), add, norm


def _per_node(model: MeasuredCost, g) -> float:
    order = g.nodes()
    free = model.free_nodes(order)
    return sum(model.node_cost(n) for n in order if n not in free)


def test_an_add_read_only_by_a_layernorm_is_priced_as_the_fused_kernel(tmp_path):
    g, add, norm = _residual_norm(extra_reader=False)
    model = measured(tmp_path)
    assert model.groups(g.nodes(), outputs=g.outputs) == [(add, norm)]
    fused = model.group_estimate((add, norm))
    assert fused is not None and fused > 0  # onnxruntime fuses it: SkipLayerNormalization
    assert model(g) == pytest.approx(fused)  # the pair costs the fused kernel, not its parts
    assert model.stats["groups"] == 1
    # Per node, nothing changes: a search pricing nodes one at a time sees the parts.
    assert model.estimate(add).source == "timed" and model.estimate(norm).source == "timed"


def test_an_add_with_another_reader_is_priced_per_node(tmp_path):
    g, add, norm = _residual_norm(extra_reader=True)
    model = measured(tmp_path)
    assert model.groups(g.nodes(), outputs=g.outputs) == []
    assert model(g) == pytest.approx(_per_node(model, g))
    # A graph output counts as a reader too.
    g2, add2, norm2 = _residual_norm(extra_reader=False)
    assert model.groups(g2.nodes(), outputs=[*g2.outputs, add2.output]) == []


def test_pairs_onnxruntime_does_not_fuse_are_priced_per_node_and_cached(tmp_path, monkeypatch):
    g, add, norm = _residual_norm(extra_reader=False, axis=1)  # not over the last axis
    model = measured(tmp_path)
    assert model.groups(g.nodes(), outputs=g.outputs) == [(add, norm)]
    assert model.group_estimate((add, norm)) is None
    assert model(g) == pytest.approx(_per_node(model, g))
    model.save()
    counter = SessionCounter(monkeypatch)
    again = measured(tmp_path)
    assert again.group_estimate((add, norm)) is None
    assert counter.count == 0


def test_fused_pair_timings_are_cached_on_disk_and_off_without_fusion(tmp_path, monkeypatch):
    g, add, norm = _residual_norm(extra_reader=False)
    first = measured(tmp_path)
    total = first(g)
    first.save()
    counter = SessionCounter(monkeypatch)
    second = measured(tmp_path)
    assert second(g) == pytest.approx(total)
    assert counter.count == 0 and second.stats["timed"] == 0
    plain = measured(tmp_path, fusion=False)
    assert plain(g) == pytest.approx(_per_node(plain, g))


def test_per_node_attribution_puts_the_fused_kernel_on_the_consumer(tmp_path):
    g, add, norm = _residual_norm(extra_reader=False)
    model = measured(tmp_path)
    seconds = model.attributed(g.nodes(), g.outputs)
    assert seconds[add] == 0.0
    assert seconds[norm] == pytest.approx(model.group_estimate((add, norm)))
    assert sum(seconds.values()) == pytest.approx(model(g))


def test_an_add_fused_into_its_matmul_is_not_fused_again(tmp_path):
    rng = np.random.default_rng(0)
    x = ir_input("x", f32(8, 32))
    w = const(rng.standard_normal((32, 32)).astype(np.float32))
    b = const(rng.standard_normal(32).astype(np.float32))
    s, c = (const(rng.standard_normal(32).astype(np.float32)) for _ in range(2))
    mm = op("MatMul", [x, w], f32(8, 32))
    add = op("Add", [mm.output, b], f32(8, 32))  # MatMul + bias: one Gemm in onnxruntime
    norm = op("LayerNormalization", [add.output, s, c], f32(8, 32), axis=-1)
    g = graph([norm.output], [x])
    model = measured(tmp_path)
    assert model.estimate(add).source == "fused"
    assert model.groups(g.nodes(), outputs=g.outputs) == []
    assert model(g) == pytest.approx(_per_node(model, g))


def test_a_rank_3_matmul_and_its_bias_run_as_one_gemm(tmp_path):
    # onnxruntime makes Reshape -> Gemm -> Reshape of them: the bias Add costs nothing.
    rng = np.random.default_rng(0)
    x = ir_input("x", f32(1, 8, 32))
    w = const(rng.standard_normal((32, 32)).astype(np.float32))
    b = const(rng.standard_normal(32).astype(np.float32))
    mm = op("MatMul", [x, w], f32(1, 8, 32))
    add = op("Add", [mm.output, b], f32(1, 8, 32))
    neg = op("Neg", [add.output], f32(1, 8, 32))
    model = measured(tmp_path)
    assert model.estimate(add).source == "fused" and model.node_cost(add) == 0.0
    assert model.estimate(neg).source == "timed"  # not an epilogue onnxruntime fuses


def test_the_search_wrapper_keeps_the_fused_kernels_price(tmp_path):
    """``graphopt optimize --cost measured`` prices graphs through OrtFusionCost: its total
    must include the fused pair's own timing, not the parts' sum."""
    from optimizer.cost.fusion import OrtFusionCost

    g, add, norm = _residual_norm(extra_reader=False)
    model = measured(tmp_path)
    wrapped = OrtFusionCost(model)
    fused = model.group_estimate((add, norm))
    assert wrapped(g) == pytest.approx(fused)
    assert wrapped(g) != pytest.approx(_per_node(model, g))
    unfused, _, _ = _residual_norm(extra_reader=True)
    assert wrapped(unfused) == pytest.approx(_per_node(model, unfused))
