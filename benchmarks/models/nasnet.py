"""NASNet-A Mobile (Zoph et al., "Learning Transferable Architectures for Scalable Image
Recognition", CVPR 2018), 4 @ 1056: N = 4 normal cells per stack, 1056 penultimate filters.

The cells are the published NASNet-A cells (as in the authors' TF-slim code and Cadene's
``pretrainedmodels`` port); each cell takes the previous two cell outputs ``prev`` (h[i-1]) and
``cur`` (h[i]), projects them to the cell's width (ReLU-conv1x1-BN, or a factorized reduction when
``prev`` is twice the spatial size) and combines pairs of branches by addition:

- normal cell: c0 = sep5(cur) + sep3(prev); c1 = sep5(prev) + sep3(prev); c2 = avg3(cur) + prev;
  c3 = avg3(prev) + avg3(prev); c4 = sep3(cur) + cur; output concat(prev, c0, ..., c4) (6x width);
- reduction cell: c0 = sep5/2(cur) + sep7/2(prev); c1 = max3/2(cur) + sep7/2(prev);
  c2 = avg3/2(cur) + sep5/2(prev); c3 = avg3(c0) + c1; c4 = sep3(c0) + max3/2(cur);
  output concat(c1, c2, c3, c4) (4x width);

where sepK is the NASNet separable branch ReLU-dwconvK-pw1x1-BN-ReLU-dwconvK-pw1x1-BN (the
stride on its first depthwise conv) and avg pools exclude padding. Stem: conv3x3/2 (32) -> two
reduction "stem cells" (widths 11 and 22) -> stacks of 4 normal cells (44, 88, 176) separated by
reduction cells -> ReLU, global average pool, linear. Compact differences from the TF
original: symmetric padding everywhere (TF pads stride-2 convs asymmetrically "SAME"), and the
stem cells reuse the generic reduction cell (the raw stem output enters as ``prev`` with 32
channels, as in the original).

Parameters: 5,289,978 [5.3M, Zoph et al. 2018; exactly the count of Cadene's port]; input
``float[N, 3, 224, 224]``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.models._common import calibrate_batchnorm, randomize_norms

BN_EPS = 1e-3


class SepConv(nn.Module):
    """Depthwise KxK (stride) -> pointwise 1x1, no bias."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, kernel, stride, kernel // 2, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class Branch(nn.Module):
    """NASNet's separable branch, applied twice: ReLU-sep-BN-ReLU-sep-BN."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), SepConv(cin, cout, kernel, stride), nn.BatchNorm2d(cout, eps=BN_EPS),
            nn.ReLU(), SepConv(cout, cout, kernel, 1), nn.BatchNorm2d(cout, eps=BN_EPS),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Project(nn.Sequential):
    """ReLU -> conv1x1 -> BN: brings a cell input to the cell's width."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS)
        )


class FactorizedReduce(nn.Module):
    """Halve the spatial size of ``prev``: two 1x1 convs on stride-2 samples offset by one pixel,
    concatenated, then BN (NASNet's path for a ``prev`` one reduction behind)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(cin, cout - cout // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        p1 = self.conv1(F.avg_pool2d(x, 1, 2))
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        p2 = self.conv2(F.avg_pool2d(shifted, 1, 2))
        return self.bn(torch.cat([p1, p2], 1))


def _avg(x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)


def _max(x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride, 1)


class NormalCell(nn.Module):
    def __init__(self, c_prev: int, c_cur: int, width: int, reduce_prev: bool) -> None:
        super().__init__()
        self.prev = FactorizedReduce(c_prev, width) if reduce_prev else Project(c_prev, width)
        self.cur = Project(c_cur, width)
        self.c0_l, self.c0_r = Branch(width, width, 5), Branch(width, width, 3)
        self.c1_l, self.c1_r = Branch(width, width, 5), Branch(width, width, 3)
        self.c4_l = Branch(width, width, 3)
        self.out_channels = 6 * width

    def forward(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        p, c = self.prev(prev), self.cur(cur)
        c0 = self.c0_l(c) + self.c0_r(p)
        c1 = self.c1_l(p) + self.c1_r(p)
        c2 = _avg(c) + p
        c3 = _avg(p) + _avg(p)
        c4 = self.c4_l(c) + c
        return torch.cat([p, c0, c1, c2, c3, c4], 1)


class ReductionCell(nn.Module):
    def __init__(self, c_prev: int, c_cur: int, width: int, project_prev: bool = True) -> None:
        super().__init__()
        # stem cell 0 feeds the raw stem output in as ``prev`` (its branches widen it)
        self.prev = Project(c_prev, width) if project_prev else nn.Identity()
        cp = width if project_prev else c_prev
        self.cur = Project(c_cur, width)
        self.c0_l, self.c0_r = Branch(width, width, 5, 2), Branch(cp, width, 7, 2)
        self.c1_r = Branch(cp, width, 7, 2)
        self.c2_r = Branch(cp, width, 5, 2)
        self.c4_l = Branch(width, width, 3)
        self.out_channels = 4 * width

    def forward(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        p, c = self.prev(prev), self.cur(cur)
        c0 = self.c0_l(c) + self.c0_r(p)
        c1 = _max(c, 2) + self.c1_r(p)
        c2 = _avg(c, 2) + self.c2_r(p)
        c3 = _avg(c0) + c1
        c4 = self.c4_l(c0) + _max(c, 2)
        return torch.cat([c1, c2, c3, c4], 1)


class NASNetAMobile(nn.Module):
    def __init__(
        self, num_classes: int = 1000, stem: int = 32, penultimate: int = 1056, n: int = 4
    ) -> None:
        super().__init__()
        width = penultimate // 24  # 44
        self.conv0 = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, bias=False), nn.BatchNorm2d(stem, eps=BN_EPS)
        )
        self.stem0 = ReductionCell(stem, stem, width // 4, project_prev=False)
        self.stem1 = ReductionCell(stem, self.stem0.out_channels, width // 2)
        self.stem1.prev = FactorizedReduce(stem, width // 2)  # conv0 is 2x the size of stem0
        cells: list[nn.Module] = []
        c_prev, c_cur = self.stem0.out_channels, self.stem1.out_channels
        reduce_prev = True  # the first normal cell's prev (stem0) is twice its size
        for stack in range(3):
            for _ in range(n):
                cell = NormalCell(c_prev, c_cur, width, reduce_prev)
                cells.append(cell)
                c_prev, c_cur, reduce_prev = c_cur, cell.out_channels, False
            if stack < 2:
                width *= 2
                cell = ReductionCell(c_prev, c_cur, width)
                cells.append(cell)
                c_prev, c_cur, reduce_prev = c_cur, cell.out_channels, True
        self.cells = nn.ModuleList(cells)
        self.fc = nn.Linear(c_cur, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.conv0(x)
        s0 = self.stem0(x0, x0)
        prev, cur = s0, self.stem1(x0, s0)
        for cell in self.cells:
            prev, cur = cur, cell(prev, cur)
        x = F.adaptive_avg_pool2d(F.relu(cur), 1)
        return self.fc(torch.flatten(x, 1))


def nasnet_a_mobile(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = NASNetAMobile()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return calibrate_batchnorm(randomize_norms(model, seed), (3, 224, 224), seed)
