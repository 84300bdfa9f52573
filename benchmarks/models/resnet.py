"""ResNet-50, ResNeXt-50 (32x4d) and a tiny ResNet, as torchvision writes them (v1.5: the stride
sits on the 3x3 convolution).

Parameters (this code; published figure in brackets):

- ``resnet50``: 25,557,032 [25.6M, He et al. 2016 / torchvision]; input ``float[N, 3, 224, 224]``.
- ``resnext50_32x4d``: 25,028,904 [25.0M, Xie et al. 2017 / torchvision]; same input.
- ``resnet_tiny`` (quick suite): BasicBlocks [1, 1, 1, 1], widths 16-128, 10 classes: 308,826;
  input ``float[N, 3, 64, 64]``.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.models._common import ConvBNAct, calibrate_batchnorm, randomize_norms


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample=None, **_) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(cin, planes, 3, stride)
        self.conv2 = ConvBNAct(planes, planes, 3, act=None)
        self.downsample = downsample
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        downsample=None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = ConvBNAct(cin, width, 1)
        self.conv2 = ConvBNAct(width, width, 3, stride, groups=groups)
        self.conv3 = ConvBNAct(width, planes * 4, 1, act=None)
        self.downsample = downsample
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...],
        widths: tuple[int, ...] = (64, 128, 256, 512),
        num_classes: int = 1000,
        groups: int = 1,
        base_width: int = 64,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.cin = widths[0]
        if small_input:  # 3x3 stem, no max-pool (CIFAR-style) for the tiny variant
            self.stem = ConvBNAct(3, widths[0], 3)
        else:
            self.stem = nn.Sequential(ConvBNAct(3, widths[0], 7, 2), nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(
            *(
                self._layer(block, w, n, 1 if i == 0 else 2, groups, base_width)
                for i, (w, n) in enumerate(zip(widths, layers))
            )
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)

    def _layer(self, block, planes, blocks, stride, groups, base_width) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.cin != planes * block.expansion:
            downsample = ConvBNAct(self.cin, planes * block.expansion, 1, stride, act=None)
        kw = {"groups": groups, "base_width": base_width}
        out = [block(self.cin, planes, stride, downsample, **kw)]
        self.cin = planes * block.expansion
        out += [block(self.cin, planes, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _finish(model: nn.Module, seed: int, size: int = 224) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return calibrate_batchnorm(randomize_norms(model, seed), (3, size, size), seed)


def resnet50(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _finish(ResNet(Bottleneck, (3, 4, 6, 3)), seed)


def resnext50_32x4d(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _finish(ResNet(Bottleneck, (3, 4, 6, 3), groups=32, base_width=4), seed)


def resnet_tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = ResNet(
        BasicBlock, (1, 1, 1, 1), widths=(16, 32, 64, 128), num_classes=10, small_input=True
    )
    return _finish(model, seed, size=64)
