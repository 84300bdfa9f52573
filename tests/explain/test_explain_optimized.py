"""Attributions of a model and of its graphopt-optimized version agree; the gradient graph is
itself an ordinary graph that graphopt's passes can optimize; the ONNX path needs no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

import optimizer
from optimizer import onnx_io, runtime
from optimizer.explain import (
    GradientModel,
    grad_cam,
    integrated_gradients,
    occlusion,
    saliency,
)
from optimizer.passes import run_passes

pytest.importorskip("torch", reason="the models are exported from torch")
pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def optimized(raw_onnx, tmp_path_factory):
    """optimized(name) -> (raw export, optimizer.optimize() of it), made on first use."""
    folder = tmp_path_factory.mktemp("optimized")
    done = {}

    def get(name: str):
        if name not in done:
            src = raw_onnx(name)
            out = folder / f"{name}.opt.onnx"
            onnx.save(optimizer.optimize(onnx.load(str(src))), str(out))
            done[name] = (src, out)
        return done[name]

    return get


def _op_count(path) -> int:
    return len(onnx.load(str(path)).graph.node)


@pytest.mark.parametrize(
    "name",
    [
        "cnn",
        pytest.param(
            "vit", marks=pytest.mark.slow(reason="graphopt's optimize() of the ViT takes ~11 s")
        ),
    ],
)
def test_attributions_of_the_original_and_the_optimized_model_agree(name, optimized, images):
    x, _ = images
    src, opt = optimized(name)
    assert _op_count(opt) < _op_count(src)  # graphopt did rewrite the model
    original, rewritten = GradientModel(src), GradientModel(opt)
    for method in (
        lambda gm: saliency(gm, x, target=2, absolute=False),
        lambda gm: integrated_gradients(gm, x[:2], target=2, steps=16),
        lambda gm: occlusion(gm, x[:2], target=2, window=(1, 8, 8)),
    ):
        a, b = method(original), method(rewritten)
        scale = np.abs(a.attributions).max()
        np.testing.assert_allclose(b.attributions, a.attributions, rtol=1e-3, atol=1e-4 * scale)


def test_grad_cam_survives_optimization_of_the_layer_it_reads(optimized, images):
    src, opt = optimized("cnn")
    opt_names = {n.output[0] for n in onnx.load(str(opt)).graph.node}
    relus = [n.output[0] for n in onnx.load(str(src)).graph.node
             if n.op_type == "Relu" and n.output[0] in opt_names]  # fmt: skip
    assert relus, "the optimized CNN keeps no Relu name"
    x, _ = images
    a = grad_cam(GradientModel(src), x, target=1, layer=relus[-1])
    b = grad_cam(GradientModel(opt), x, target=1, layer=relus[-1])
    np.testing.assert_allclose(b.attributions, a.attributions, rtol=1e-3, atol=1e-5)


def test_raw_export_gradients_match_torch(raw_onnx, torch_models, images):
    """The raw export keeps BatchNormalization, Constant and Identity nodes: their VJPs too."""
    import torch

    x, _ = images
    res = saliency(GradientModel(raw_onnx("cnn")), x, target=6, absolute=False)
    xt = torch.tensor(x, requires_grad=True)
    torch_models["cnn"](xt)[:, 6].sum().backward()
    want = xt.grad.numpy()
    np.testing.assert_allclose(res.attributions, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_graphopt_passes_optimize_the_gradient_graph_without_changing_it(gradient_models, images):
    gm = gradient_models["cnn"]
    gg = gm.vjp_graph()
    before = onnx_io.to_proto(gg.graph)
    graph, _ = run_passes(gg.graph)
    after = onnx_io.to_proto(graph)
    x, _ = images
    cot = np.zeros((len(x), 10), dtype=np.float32)
    cot[:, 3] = 1
    report = runtime.compare_models(
        before, after, inputs={"input": x, gg.cotangent: cot}, rtol=1e-4, atol=1e-6
    )
    assert report.ok, report.summary()
    assert len(graph.nodes()) <= len(gg.graph.nodes())


def test_explaining_an_onnx_model_never_imports_torch(onnx_models, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from optimizer.explain import GradientModel, integrated_gradients, rise\n"
        f"gm = GradientModel({str(onnx_models['cnn'])!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "res = integrated_gradients(gm, x, target=0, steps=8)\n"
        "rise(gm, x, target=0, masks=16)\n"
        "print(res.attributions.shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 1, 32, 32)"
