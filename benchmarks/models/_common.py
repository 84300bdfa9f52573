"""Layers and initialisation helpers shared by the model families.

Every builder seeds torch itself (``torch.manual_seed``) and returns a module in eval mode.
Normalisation layers get random (not identity) affine parameters, so that no normalisation is
a no-op an optimizer could delete where a trained model would not allow it; the CNNs then
calibrate their BatchNorm running statistics on one random batch (:func:`calibrate_batchnorm`)
so that activations stay O(1) through the depth of the network.
"""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(module: nn.Module) -> int:
    """Number of parameters; tied (shared) parameters count once, buffers not at all."""
    return sum(p.numel() for p in module.parameters())


def randomize_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random affine parameters for every BatchNorm/LayerNorm/RMSNorm-like layer, random running
    statistics for BatchNorm (weights ~ U[0.5, 1.5), biases and means ~ N(0, 0.1^2), variances ~
    U[0.5, 1.5)). Returns ``module``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            elif isinstance(m, (nn.LayerNorm, RMSNorm)):
                w = getattr(m, "weight", None)
                if w is not None:
                    w.copy_(torch.rand(w.shape, generator=gen) + 0.5)
                b = getattr(m, "bias", None)
                if b is not None:
                    b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
    return module


def calibrate_batchnorm(
    module: nn.Module, input_shape: tuple[int, ...], seed: int = 0, batch: int = 2
) -> nn.Module:
    """Set every BatchNorm's running statistics to the batch statistics of one forward pass on
    random input ``[batch, *input_shape]`` (affine parameters untouched), then eval mode.

    Random running statistics do not normalise anything: activations of a deep random network
    then grow by orders of magnitude (ResNet-50: outputs ~1e3, NASNet: ~1e5), which makes float32
    rounding differences between equivalent graphs exceed any sensible tolerance. Calibrated
    statistics keep activations O(1), as in a trained network.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly its statistics
    gen = torch.Generator().manual_seed(seed)
    module.train()
    with torch.no_grad():
        module(torch.randn((batch, *input_shape), generator=gen))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return module.eval()


def init_transformer(module: nn.Module, std: float = 0.02, seed: int = 0) -> nn.Module:
    """GPT/BERT-style initialisation: Linear and Embedding weights ~ N(0, std^2), biases
    ~ N(0, std^2) (not zero, so that no bias add is removable), then :func:`randomize_norms`."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * std)
    return randomize_norms(module, seed)


class RMSNorm(nn.Module):
    """Root-mean-square norm as Llama and T5 write it (no mean subtraction, no bias), computed
    in float32: ``x * rsqrt(mean(x^2) + eps) * weight``."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation (``None``: no activation)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int] = 3,
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
        eps: float = 1e-5,
    ) -> None:
        if padding is None:
            padding = (
                (kernel - 1) // 2
                if isinstance(kernel, int)
                else tuple((k - 1) // 2 for k in kernel)
            )
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=eps),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


def causal_mask(seq: int) -> torch.Tensor:
    """Additive causal mask ``[1, 1, seq, seq]``: 0 on and below the diagonal, the most negative
    float32 above it (HF's convention, rather than -inf, so fully masked rows stay finite)."""
    mask = torch.full((seq, seq), torch.finfo(torch.float32).min).triu(1)
    return mask[None, None]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Explicit (eager, unfused) attention on ``[N, heads, seq, head_dim]`` tensors, as the
    reference implementations write it: ``softmax(q @ k^T * scale + bias) @ v``. ``scale``
    defaults to ``head_dim ** -0.5``; T5 passes 1.0."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2))
    if scale != 1.0:
        scores = scores * scale
    if bias is not None:
        scores = scores + bias
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[N, seq, heads * d]`` -> ``[N, heads, seq, d]``."""
    n, s, _ = x.shape
    return x.view(n, s, heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[N, heads, seq, d]`` -> ``[N, seq, heads * d]``."""
    n, h, s, d = x.shape
    return x.transpose(1, 2).reshape(n, s, h * d)
