"""Perturbation methods: masks applied inside the graph, checked against explicit loops and
against closed forms on linear models (exact Shapley values, RISE's expectation)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optimizer import onnx_io
from optimizer.explain import (
    GradientModel,
    add_mask_input,
    deletion_insertion,
    kernel_shap,
    occlusion,
    rise,
)
from optimizer.explain.errors import ExplainError
from optimizer.explain.perturbation import grid_segments, shapley_kernel_weight


def _linear_model(weights: np.ndarray, batch="N", square: bool = False) -> onnx.ModelProto:
    """y[n, 0] = sum(w * x[n]) (+ its square as y[n, 1] when ``square``: non-linear)."""
    shape = list(weights.shape)
    w = numpy_helper.from_array(weights.astype(np.float32), "w")
    axes = numpy_helper.from_array(np.arange(1, len(shape) + 1, dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["p"]),
        helper.make_node("ReduceSum", ["p", "axes"], ["s"], keepdims=0),
        helper.make_node("Unsqueeze", ["s", "one"], ["lin"]),
    ]
    inits = [w, axes, numpy_helper.from_array(np.array([1], dtype=np.int64), "one")]
    out = "lin"
    if square:
        nodes += [helper.make_node("Mul", ["lin", "lin"], ["sq"]),
                  helper.make_node("Concat", ["lin", "sq"], ["y"], axis=1)]  # fmt: skip
        out = "y"
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *shape])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, 2 if square else 1])],
        initializer=inits,
    )  # fmt: skip
    return onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    )


def _run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


def test_mask_pass_equals_blending_outside_the_graph(rng):
    weights = rng.standard_normal((2, 4, 4))
    model = _linear_model(weights, square=True)
    gm = GradientModel(model)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    base = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    masks = rng.random((5, 1, 4, 4)).astype(np.float32)
    got = gm.run_masks(x, base, masks, mask_shape=(1, 4, 4), masks_per_run=2)
    want = _run(model, (base + masks * (x - base)).astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The masked graph is still a valid IR graph with the two extra inputs.
    mg = add_mask_input(gm.graph, "x", mask_shape=(1, 4, 4))
    mg.graph.check()
    assert [v.input_name for v in mg.graph.inputs] == ["x", mg.mask, mg.baseline]


def test_segment_masks_are_expanded_by_a_gather_in_the_graph(rng):
    model = _linear_model(rng.standard_normal((1, 4, 6)), square=True)
    gm = GradientModel(model)
    segments = grid_segments((1, 4, 6), (2, 3))
    assert segments.shape == (1, 4, 6) and segments.max() == 5
    x = rng.standard_normal((1, 1, 4, 6)).astype(np.float32)
    coalitions = (rng.random((7, 6)) < 0.5).astype(np.float32)
    got = gm.run_masks(x, 0.0, coalitions, segments=segments)
    dense = coalitions[:, segments]  # [7, 1, 4, 6]
    np.testing.assert_allclose(got, _run(model, x * dense), rtol=1e-5, atol=1e-5)
    ops = [n.op for n in gm.masked(segments=segments).graph.nodes()]
    assert "Gather" in ops


def test_occlusion_matches_an_explicit_loop(rng):
    model = _linear_model(rng.standard_normal((1, 6, 6)), square=True)
    gm = GradientModel(model)
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    res = occlusion(gm, x, target=1, window=(1, 3, 3), stride=(1, 2, 2), baseline=0.5)
    starts = [0, 2, 3]  # stride 2 plus a last window flush with the edge
    for i in range(2):
        f0 = _run(model, x[i : i + 1])[0, 1]
        total, count = np.zeros((6, 6)), np.zeros((6, 6))
        for r in starts:
            for c in starts:
                occluded = x[i : i + 1].copy()
                occluded[..., r : r + 3, c : c + 3] = 0.5
                total[r : r + 3, c : c + 3] += f0 - _run(model, occluded)[0, 1]
                count[r : r + 3, c : c + 3] += 1
        np.testing.assert_allclose(res.attributions[i, 0], total / count, rtol=1e-4, atol=1e-4)


def test_kernel_shap_is_exact_when_every_coalition_fits(rng):
    # On a linear model the Shapley value of a segment is sum over it of w * (x - baseline).
    weights = rng.standard_normal((1, 4, 4))
    gm = GradientModel(_linear_model(weights))
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    segments = grid_segments((1, 4, 4), 2)  # 4 segments: 14 coalitions, all enumerated
    res = kernel_shap(gm, x, target=0, segments=segments, samples=64, baseline=0.25)
    contrib = (weights * (x[0] - 0.25)).reshape(-1)
    want = np.bincount(segments.reshape(-1), weights=contrib)
    np.testing.assert_allclose(res.features[0], want, rtol=1e-4, atol=1e-5)


def test_sampled_kernel_shap_keeps_efficiency_and_ranks_a_linear_model(rng):
    weights = rng.standard_normal((1, 8, 8))
    model = _linear_model(weights)
    gm = GradientModel(model)
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    res = kernel_shap(gm, x, target=0, grid=4, samples=256, seed=3)  # 16 segments: sampled
    total = _run(model, x)[0, 0] - _run(model, np.zeros_like(x))[0, 0]
    assert res.features[0].sum() == pytest.approx(total, rel=1e-5, abs=1e-5)
    want = np.bincount(grid_segments((1, 8, 8), 4).reshape(-1), (weights * x[0]).reshape(-1))
    np.testing.assert_allclose(res.features[0], want, rtol=1e-3, atol=1e-3)


def test_shapley_kernel_weights_match_the_formula():
    # pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|)), Lundberg & Lee (2017), Theorem 2.
    assert shapley_kernel_weight(4, 1) == pytest.approx(3 / (4 * 1 * 3))
    assert shapley_kernel_weight(4, 2) == pytest.approx(3 / (6 * 2 * 2))


def test_rise_converges_to_its_expectation_on_a_linear_model(rng):
    # With independent keep-masks (probability p), E[f(x*m) m_j] / p = (1-p) w_j x_j + p f(x).
    weights = rng.standard_normal(12)
    model = _linear_model(weights)
    gm = GradientModel(model)
    x = rng.standard_normal((1, 12)).astype(np.float32)
    res = rise(gm, x, target=0, masks=20000, p=0.5, seed=1, masks_per_run=4096)
    fx = float(_run(model, x)[0, 0])
    want = 0.5 * weights * x[0] + 0.5 * fx
    np.testing.assert_allclose(res.attributions[0], want, atol=0.1 * np.abs(want).max())


def test_deletion_beats_a_random_order_with_the_true_attribution(rng):
    weights = rng.standard_normal((1, 6, 6))
    gm = GradientModel(_linear_model(weights, square=False))
    x = np.abs(rng.standard_normal((3, 1, 6, 6))).astype(np.float32)
    exact = weights * x
    true = deletion_insertion(gm, x, exact, np.zeros(3, int), steps=12, score="raw",
                              insertion_baseline=np.zeros_like(x))  # fmt: skip
    rand = deletion_insertion(gm, x, exact, np.zeros(3, int), steps=12, score="raw",
                              insertion_baseline=np.zeros_like(x), order="random")  # fmt: skip
    assert np.all(true.deletion_auc < rand.deletion_auc)
    assert np.all(true.insertion_auc > rand.insertion_auc)
    # Both curves start and end at the model's outputs on x and on the baseline.
    np.testing.assert_allclose(true.deletion[:, 0], exact.reshape(3, -1).sum(1), rtol=1e-4)
    np.testing.assert_allclose(true.deletion[:, -1], 0, atol=1e-5)


def test_a_model_with_a_fixed_batch_of_one_still_runs_every_mask(rng):
    weights = rng.standard_normal((1, 4, 4))
    model = _linear_model(weights, batch=1)
    gm = GradientModel(model)
    assert gm.fixed_batch == 1
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    masks = rng.random((3, 1, 4, 4)).astype(np.float32)
    got = gm.run_masks(x, 0.0, masks, mask_shape=(1, 4, 4), masks_per_run=64)
    want = np.concatenate([_run(model, x * m[None]) for m in masks])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bad_windows_and_segments_are_refused(rng):
    gm = GradientModel(_linear_model(rng.standard_normal((1, 4, 4))))
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    with pytest.raises(ExplainError, match="one size per dim"):
        occlusion(gm, x, target=0, window=(2, 2))
    with pytest.raises(ExplainError, match="larger than"):
        occlusion(gm, x, target=0, window=(1, 8, 8))
    with pytest.raises(ExplainError, match="segment ids"):
        kernel_shap(gm, x, target=0, segments=np.array([[[0, 2, 2, 2]] * 4]))
    with pytest.raises(ExplainError, match="does not broadcast"):
        add_mask_input(onnx_io.import_model(_linear_model(np.ones((1, 4, 4))))[0], "x",
                       mask_shape=(3, 4, 4))  # fmt: skip


def test_integrated_gradients_on_a_fixed_batch_model_are_exact_for_a_linear_model(rng):
    from optimizer.explain import integrated_gradients

    weights = rng.standard_normal((1, 4, 4))
    gm = GradientModel(_linear_model(weights, batch=1))
    x = rng.standard_normal((3, 1, 4, 4)).astype(np.float32)
    res = integrated_gradients(gm, x, target=0, baseline=0.5, steps=7, batch_size=64)
    np.testing.assert_allclose(res.attributions, weights * (x - 0.5), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.delta, 0, atol=1e-5)
