"""ConvNeXt-tiny (Liu et al., "A ConvNet for the 2020s", CVPR 2022), as the official code
writes it: 4x4/4 patchify stem + channels-first LayerNorm; stages of depths (3, 3, 9, 3) and
widths (96, 192, 384, 768) separated by LayerNorm + 2x2/2 conv; blocks of depthwise 7x7 conv ->
channels-last LayerNorm -> Linear 4x -> GELU -> Linear -> layer scale -> residual; global
average pool -> LayerNorm -> linear head. Stochastic depth is inactive in eval mode.

Layer scale starts at 0.1 + U[0, 0.1) here rather than the published 1e-6 init, so that the
blocks' random-weight contribution is numerically visible (a trained model's scales are far from
1e-6 too); the parameter count is the same.

Parameters: 28,589,128 [28.6M, Liu et al. 2022 / torchvision]; input ``float[N, 3, 224, 224]``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.models._common import randomize_norms


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (permute, normalize, permute back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(0.1 + 0.1 * torch.rand(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(
        self,
        depths: tuple[int, ...] = (3, 3, 9, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))
        ]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i > 0:
                down = nn.Conv2d(dims[i - 1], dim, 2, 2)
                stages.append(nn.Sequential(LayerNorm2d(dims[i - 1], eps=1e-6), down))
            stages.append(nn.Sequential(*(Block(dim) for _ in range(depth))))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x).mean((-2, -1))
        return self.head(self.norm(x))


def convnext_tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = ConvNeXt()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.normal_(m.bias, 0.0, 0.02)
    return randomize_norms(model, seed).eval()
