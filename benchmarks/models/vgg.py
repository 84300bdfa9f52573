"""VGG-19 (configuration E, no batch norm), as torchvision writes it.

Parameters: 143,667,240 [143.7M, Simonyan & Zisserman 2015 / torchvision]; input
``float[N, 3, 224, 224]``; ~575 MB of float32 weights, the largest model of the zoo.
"""

from __future__ import annotations

import torch
from torch import nn

CFG_E = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M")  # fmt: skip


class VGG(nn.Module):
    def __init__(self, cfg=CFG_E, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg19(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = VGG()
    with torch.no_grad():  # torchvision's init; random non-zero biases instead of zeros
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.normal_(m.bias, 0, 0.01)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.normal_(m.bias, 0, 0.01)
    return model.eval()
