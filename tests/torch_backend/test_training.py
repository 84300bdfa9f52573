"""Training through the graphopt backend (aot_autograd): one step gives the gradients eager
gives, forward and backward graphs both run on onnxruntime, and parameters are never frozen
(a second step after an optimizer update still matches eager)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")

from backend_helpers import Recorder, assert_same  # noqa: E402

from benchmarks import models  # noqa: E402

pytestmark = pytest.mark.torch

#: Gradients go through more reordered sums than outputs do.
GRAD_RTOL, GRAD_ATOL = 2e-3, 2e-4


def _loss(out):
    out = out if isinstance(out, torch.Tensor) else out[0]
    return (out.float() ** 2).mean()


def _step(module, inputs, optimizer=None):
    """One step of ``module`` (maybe compiled); the gradients by parameter name."""
    params = getattr(module, "_orig_mod", module)  # a compiled module's names are prefixed
    params.zero_grad(set_to_none=True)
    loss = _loss(module(*inputs))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in params.named_parameters() if p.grad is not None}
    if optimizer is not None:
        optimizer.step()
    return loss.detach(), grads


def _assert_same_grads(got, expected):
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(
            got[name],
            expected[name],
            rtol=GRAD_RTOL,
            atol=GRAD_ATOL,
            msg=lambda m, n=name: f"{n}: {m}",
        )


@pytest.mark.parametrize("name", ["resnet_tiny", "bert_tiny"])
def test_one_training_step_gives_eager_gradients(name):
    """Forward and backward both on onnxruntime: the CNN's backward needs graphopt's
    decomposition of convolution_backward, its forward the one of training-mode batch norm."""
    module, inputs = models.build(name, batch=2)
    module.train()  # BatchNorm uses batch statistics and updates its running ones
    reference = copy.deepcopy(module)
    backend = Recorder()
    compiled = torch.compile(module, backend=backend)
    loss, grads = _step(compiled, inputs)
    ref_loss, ref_grads = _step(reference, inputs)
    assert_same(loss, ref_loss, rtol=GRAD_RTOL, atol=GRAD_ATOL)
    _assert_same_grads(grads, ref_grads)
    for buf, ref_buf in zip(module.buffers(), reference.buffers()):  # running statistics
        assert_same(buf, ref_buf)
    graphs = {g.name.rsplit("(", 1)[-1].rstrip(")"): g for g in backend.graphs}
    assert set(graphs) == {"forward", "backward"}
    for graph in graphs.values():
        assert graph.fallback_reason is None
        assert graph.stats.compilations == 1
        assert not graph.frozen  # nothing is baked in while training


def test_steps_after_an_update_use_the_new_weights():
    module, inputs = models.build("gpt2_tiny", batch=2)
    reference = copy.deepcopy(module)
    compiled = torch.compile(module, backend=Recorder())
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    for _ in range(2):
        loss, grads = _step(compiled, inputs, opt)
        ref_loss, ref_grads = _step(reference, inputs, ref_opt)
        assert_same(loss, ref_loss, rtol=GRAD_RTOL, atol=GRAD_ATOL)
        _assert_same_grads(grads, ref_grads)
    assert not torch.equal(
        next(module.parameters()), next(models.build("gpt2_tiny")[0].parameters())
    )


def test_inputs_requiring_grad_get_gradients():
    """Gradients flow to user inputs too (what attribution methods need)."""
    lin = torch.nn.Linear(6, 3)
    compiled = torch.compile(lambda x: torch.tanh(lin(x)).sum(-1), backend=Recorder())
    x = torch.randn(4, 6, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    compiled(x).sum().backward()
    torch.tanh(lin(x_ref)).sum(-1).sum().backward()
    assert_same(x.grad, x_ref.grad)


def test_dropout_trains_on_onnxruntime_with_consistent_masks():
    """Dropout draws its own numbers on onnxruntime (not eager's), so the check is what
    eager cannot be compared with: the backward uses the mask the forward drew."""
    lin = torch.nn.Linear(8, 64)
    model = torch.nn.Sequential(lin, torch.nn.Dropout(0.5)).train()
    backend = Recorder()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(16, 8)
    out = compiled(x)
    out.sum().backward()
    kept = (out != 0).float()  # the mask the forward drew (lin(x) is never exactly 0)
    assert 0.3 < kept.mean().item() < 0.7
    torch.testing.assert_close(lin.bias.grad, kept.sum(0) * 2)  # scaled by 1 / (1 - p)
    assert not torch.equal(compiled(x) != 0, kept.bool())  # a new mask per call
    for graph in backend.graphs:
        assert graph.fallback_reason is None
