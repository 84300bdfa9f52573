"""Inception-v3, as torchvision writes it, WITHOUT the auxiliary classifier (inference graph;
``transform_input=False``).

Parameters: 23,834,568 [23.8M without the aux head; 27.2M with it: Szegedy et al. 2016 /
torchvision]; input ``float[N, 3, 299, 299]``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.models._common import ConvBNAct, calibrate_batchnorm, randomize_norms


def _conv(cin: int, cout: int, kernel, stride: int = 1, padding=0) -> ConvBNAct:
    return ConvBNAct(cin, cout, kernel, stride, padding, eps=0.001)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _conv(cin, 64, 1)
        self.branch5x5 = nn.Sequential(_conv(cin, 48, 1), _conv(48, 64, 5, padding=2))
        self.branch3x3dbl = nn.Sequential(
            _conv(cin, 64, 1), _conv(64, 96, 3, padding=1), _conv(96, 96, 3, padding=1)
        )
        self.branch_pool = _conv(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x), pool], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _conv(cin, 384, 3, stride=2)
        self.branch3x3dbl = nn.Sequential(
            _conv(cin, 64, 1), _conv(64, 96, 3, padding=1), _conv(96, 96, 3, stride=2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.max_pool2d(x, 3, stride=2)
        return torch.cat([self.branch3x3(x), self.branch3x3dbl(x), pool], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = _conv(cin, 192, 1)
        self.branch7x7 = nn.Sequential(
            _conv(cin, c7, 1), _conv(c7, c7, (1, 7), padding=(0, 3)),
            _conv(c7, 192, (7, 1), padding=(3, 0)),
        )  # fmt: skip
        self.branch7x7dbl = nn.Sequential(
            _conv(cin, c7, 1),
            _conv(c7, c7, (7, 1), padding=(3, 0)), _conv(c7, c7, (1, 7), padding=(0, 3)),
            _conv(c7, c7, (7, 1), padding=(3, 0)), _conv(c7, 192, (1, 7), padding=(0, 3)),
        )  # fmt: skip
        self.branch_pool = _conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x), pool], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = nn.Sequential(_conv(cin, 192, 1), _conv(192, 320, 3, stride=2))
        self.branch7x7x3 = nn.Sequential(
            _conv(cin, 192, 1),
            _conv(192, 192, (1, 7), padding=(0, 3)), _conv(192, 192, (7, 1), padding=(3, 0)),
            _conv(192, 192, 3, stride=2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.max_pool2d(x, 3, stride=2)
        return torch.cat([self.branch3x3(x), self.branch7x7x3(x), pool], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch1x1 = _conv(cin, 320, 1)
        self.branch3x3_1 = _conv(cin, 384, 1)
        self.branch3x3_2a = _conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = nn.Sequential(_conv(cin, 448, 1), _conv(448, 384, 3, padding=1))
        self.branch3x3dbl_3a = _conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b3x3 = torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1)
        d = self.branch3x3dbl_1(x)
        dbl = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b3x3, dbl, pool], 1)


class InceptionV3(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv(3, 32, 3, stride=2), _conv(32, 32, 3), _conv(32, 64, 3, padding=1),
            nn.MaxPool2d(3, 2), _conv(64, 80, 1), _conv(80, 192, 3), nn.MaxPool2d(3, 2),
        )  # fmt: skip
        self.mixed = nn.Sequential(
            InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64),
            InceptionB(288),
            InceptionC(768, 128), InceptionC(768, 160), InceptionC(768, 160), InceptionC(768, 192),
            InceptionD(768),
            InceptionE(1280), InceptionE(2048),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.mixed(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def inception_v3(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = InceptionV3()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return calibrate_batchnorm(randomize_norms(model, seed), (3, 299, 299), seed)
