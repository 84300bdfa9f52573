"""MobileNetV2 (Sandler et al., CVPR 2018), as torchvision writes it: inverted residual blocks
(1x1 expand - ReLU6 - 3x3 depthwise - ReLU6 - 1x1 linear projection, residual when shapes
allow), 1280-channel last conv, global average pool, dropout, linear.

Parameters:

- ``mobilenet_v2`` (width 1.0, 1000 classes): 3,504,872 [3.5M, torchvision]; input
  ``float[N, 3, 224, 224]``;
- ``mobilenet_v2_tiny`` (quick suite: width 0.25, 10 classes): 250,922; input
  ``float[N, 3, 64, 64]``.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.models._common import ConvBNAct, calibrate_batchnorm, randomize_norms

#: (expansion t, output channels c, repeats n, first stride s) per stage
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            ConvBNAct(hidden, cout, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        cin = make_divisible(32 * width)
        last = make_divisible(1280 * max(1.0, width))
        layers: list[nn.Module] = [ConvBNAct(3, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in SETTINGS:
            cout = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(ConvBNAct(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mobilenet_v2(
    seed: int = 0, width: float = 1.0, num_classes: int = 1000, size: int = 224
) -> nn.Module:
    torch.manual_seed(seed)
    model = MobileNetV2(width, num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
    return calibrate_batchnorm(randomize_norms(model, seed), (3, size, size), seed)


def mobilenet_v2_tiny(seed: int = 0) -> nn.Module:
    return mobilenet_v2(seed, width=0.25, num_classes=10, size=64)
