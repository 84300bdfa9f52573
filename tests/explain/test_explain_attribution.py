"""Gradient attributions on ONNX exports of torch models, checked against torch autograd.

The same model runs in torch (autograd) and as ONNX through graphopt's VJP graph on
onnxruntime: gradients, Grad-CAM and integrated gradients must agree, and integrated
gradients must satisfy completeness within 1%.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")

from explain_helpers import last_op_output  # noqa: E402

from optimizer.explain import (  # noqa: E402
    GradientModel,
    grad_cam,
    input_x_gradient,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from optimizer.explain.attribution import quadrature, resize_bilinear  # noqa: E402
from optimizer.explain.errors import ExplainError  # noqa: E402

pytestmark = pytest.mark.torch
NAMES = ("cnn", "vit")


def _torch_grad(module, x: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    xt = torch.tensor(x, requires_grad=True)
    out = module(xt)
    out[:, target].sum().backward()
    return out[:, target].detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("name", NAMES)
def test_input_gradient_matches_torch_autograd(name, torch_models, gradient_models, images):
    x, _ = images
    res = saliency(gradient_models[name], x, target=3, absolute=False)
    scores, grads = _torch_grad(torch_models[name], x, 3)
    scale = np.abs(grads).max()
    np.testing.assert_allclose(res.attributions, grads, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(res.scores, scores, rtol=1e-4, atol=1e-5)
    ixg = input_x_gradient(gradient_models[name], x, target=3)
    np.testing.assert_allclose(ixg.attributions, x * grads, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_targets_default_to_the_argmax_and_batching_changes_nothing(
    name, torch_models, gradient_models, images
):
    x, _ = images
    gm = gradient_models[name]
    whole = saliency(gm, x, absolute=False, batch_size=64)
    with torch.no_grad():
        want = torch_models[name](torch.tensor(x)).numpy().argmax(1)
    np.testing.assert_array_equal(whole.targets, want)
    single = saliency(gm, x, absolute=False, batch_size=1)
    np.testing.assert_allclose(single.attributions, whole.attributions, rtol=1e-5, atol=1e-9)
    per_example = saliency(gm, x, target=want, absolute=False, batch_size=4)
    np.testing.assert_allclose(per_example.attributions, whole.attributions, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_integrated_gradients_completeness_within_one_percent(name, gradient_models, images):
    x, _ = images
    res = integrated_gradients(gradient_models[name], x, target=5, steps=64)
    gap = res.attributions.reshape(len(x), -1).sum(axis=1) - (res.scores - res.baseline_scores)
    np.testing.assert_allclose(gap, res.delta, rtol=1e-4, atol=1e-7)
    assert np.all(np.abs(res.delta) <= 0.01 * np.abs(res.scores - res.baseline_scores))


def test_integrated_gradients_match_a_torch_implementation(torch_models, gradient_models, images):
    x, _ = images
    x, base = x[:2], np.full_like(x[:2], -0.5)
    res = integrated_gradients(
        gradient_models["vit"], x, target=1, baseline=base, steps=16, method="riemann_trapezoid"
    )
    alphas, weights = quadrature(16, "riemann_trapezoid")
    total = np.zeros_like(x, dtype=np.float64)
    for a, w in zip(alphas, weights):
        _, g = _torch_grad(torch_models["vit"], (base + a * (x - base)).astype(np.float32), 1)
        total += w * g
    want = (x - base) * total
    np.testing.assert_allclose(res.attributions, want, rtol=1e-3, atol=1e-6 * np.abs(want).max())


def test_smoothgrad_is_the_mean_gradient_of_the_noisy_copies(torch_models, gradient_models, images):
    x, _ = images
    res = smoothgrad(gradient_models["cnn"], x[:1], target=2, samples=8, noise=0.1, seed=7)
    rng = np.random.default_rng(7)
    sigma = 0.1 * float(x[0].max() - x[0].min())
    noisy = x[0] + rng.normal(0.0, sigma, (8, *x[0].shape)).astype(np.float32)
    _, grads = _torch_grad(torch_models["cnn"], noisy, 2)
    np.testing.assert_allclose(res.attributions[0], grads.mean(0), rtol=1e-4, atol=1e-7)


def test_grad_cam_matches_torch_hooks(onnx_models, torch_models, gradient_models, images):
    x, _ = images
    layer = last_op_output(onnx_models["cnn"], "Relu")
    res = grad_cam(gradient_models["cnn"], x, target=4, layer=layer)
    module = torch_models["cnn"]
    saved = {}
    relu = module.features[-1]
    hook = relu.register_forward_hook(lambda m, i, o: saved.update(act=o))
    try:
        out = module(torch.tensor(x))
        act = saved["act"]
        (grad,) = torch.autograd.grad(out[:, 4].sum(), act)
    finally:
        hook.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * act).sum(1))
    want = torch.nn.functional.interpolate(
        cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False
    )[:, 0]
    want = want.detach().numpy()
    np.testing.assert_allclose(res.attributions, want, rtol=1e-4, atol=1e-6 * want.max())


def test_resize_bilinear_is_torchs_half_pixel_interpolation(rng):
    maps = rng.standard_normal((2, 5, 7)).astype(np.float32)
    want = torch.nn.functional.interpolate(
        torch.tensor(maps)[:, None], size=(13, 9), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    np.testing.assert_allclose(resize_bilinear(maps, (13, 9)), want, rtol=1e-5, atol=1e-6)


def test_gradient_of_an_embedding_in_a_token_model():
    """A text transformer takes token ids (no gradient); attribute to its embedding instead:
    the graph is cut there and the gradient matches torch's for that tensor."""
    import models  # tests/models.py

    module = models.transformer_encoder()
    path = models.exported("transformer")
    tokens = models.example_inputs("transformer", batch=3)[0]
    gm = GradientModel(path, input="embedding")
    emb = gm.activations({"input": tokens.numpy()})["embedding"]
    res = saliency(gm, emb, target=(2, 7), absolute=False)  # position 2, vocabulary entry 7
    saved = {}
    hook = module.embed.register_forward_hook(lambda m, i, o: saved.update(emb=o))
    try:
        out = module(tokens)
        (grad,) = torch.autograd.grad(out[:, 2, 7].sum(), saved["emb"])
    finally:
        hook.remove()
    np.testing.assert_allclose(emb, saved["emb"].detach().numpy(), rtol=1e-5, atol=1e-6)
    scale = grad.abs().max().item()
    np.testing.assert_allclose(res.attributions, grad.numpy(), rtol=1e-3, atol=1e-5 * scale)


def test_bad_targets_and_inputs_are_explained(gradient_models, images):
    x, _ = images
    gm = gradient_models["cnn"]
    with pytest.raises(ExplainError, match="target out of range"):
        saliency(gm, x, target=10)
    with pytest.raises(ExplainError, match="axis 2 has size 16"):
        saliency(gm, x[:, :, :16])
    with pytest.raises(ExplainError, match="unknown integration method"):
        integrated_gradients(gm, x, target=0, method="simpson")
