"""Models and data for the explanation benchmarks and tests, in plain torch.

- :func:`digits`: sklearn's bundled handwritten digits (1797 8x8 images), resized to 32x32 and
  standardized, as ``float32[N, 1, 32, 32]`` with labels; no download.
- :func:`small_cnn`: conv-BN-ReLU-maxpool x2, conv-BN-ReLU, global average pool, linear
  (the last ReLU is the Grad-CAM layer).
- :func:`small_vit`: a vision transformer: 4x4 patch convolution, learned positions, two pre-LN
  blocks (multi-head attention, erf GELU MLP), LayerNorm, mean pool, linear head.
- :func:`train`: a few epochs of Adam (seeded); :func:`export`: ``torch.onnx.export(...,
  dynamo=True)`` with a dynamic batch dimension.

Every builder seeds torch and returns an eval-mode module.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from optimizer.explain.attribution import resize_bilinear

IMAGE = 32
CLASSES = 10


def digits(size: int = IMAGE) -> tuple[np.ndarray, np.ndarray]:
    """The digits data set as standardized ``float32[N, 1, size, size]`` images and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = data.images.astype(np.float32) / 16.0
    images = resize_bilinear(images, (size, size))
    images = (images - images.mean()) / images.std()
    return images[:, None].astype(np.float32), data.target.astype(np.int64)


class SmallCNN(nn.Module):
    """~25k parameters; input ``[N, 1, 32, 32]``, logits ``[N, 10]``."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(channels, 16), nn.MaxPool2d(2),
            *block(16, 32), nn.MaxPool2d(2),
            *block(32, 64),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class Block(nn.Module):
    """A pre-LN transformer block with explicit attention (exports to plain ONNX ops)."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, c = x.shape
        h = self.heads
        qkv = self.qkv(self.norm1(x)).reshape(n, s, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(q @ k.transpose(-2, -1) * (c // h) ** -0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(n, s, c))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class SmallViT(nn.Module):
    """Input ``[N, 1, 32, 32]`` -> 64 patch tokens of width 64 -> 2 blocks -> logits."""

    def __init__(self, channels: int = 1, patch: int = 4, dim: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(channels, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (IMAGE // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, 4, 2 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


def small_cnn(seed: int = 0) -> SmallCNN:
    """A :class:`SmallCNN` with seeded random weights and random BatchNorm statistics."""
    torch.manual_seed(seed)
    model = SmallCNN()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def small_vit(seed: int = 0) -> SmallViT:
    """A :class:`SmallViT` with seeded random weights."""
    torch.manual_seed(seed)
    return SmallViT().eval()


def train(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 3,
    lr: float = 3e-3,
    batch: int = 64,
    seed: int = 0,
) -> float:
    """Train ``model`` in place (Adam, cross-entropy); returns the final training accuracy.

    Leaves the model in eval mode."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def export(
    model: nn.Module, path: str | Path, example: torch.Tensor, *, optimize: bool = True
) -> Path:
    """Export ``model`` to ``path`` (dynamo exporter, dynamic batch, weights embedded).

    ``optimize=False`` skips the exporter's own clean-up (BatchNormalization, Identity and
    Constant nodes stay in the graph: work for graphopt)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
            optimize=optimize,
        )
        program.save(str(path), external_data=False)
    return path
