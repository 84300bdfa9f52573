"""ViT-B/16 (Dosovitskiy et al., ICLR 2021) at 224x224, as timm's ``vit_base_patch16_224``
computes it unfused: 16x16 patch convolution -> class token + learned positions -> 12 pre-LN
blocks (fused QKV, explicit attention, erf GELU) -> LayerNorm -> linear head on the class token.

Parameters: 86,567,656 [86.6M, timm / torchvision ``vit_b_16``]; input ``float[N, 3, 224, 224]``.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.models._common import attention, init_transformer, merge_heads


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(n, s, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = x + self.proj(merge_heads(attention(q, k, v)))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    def __init__(
        self,
        image: int = 224,
        patch: int = 16,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp: int = 3072,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit_b16(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return init_transformer(VisionTransformer(), seed=seed).eval()
