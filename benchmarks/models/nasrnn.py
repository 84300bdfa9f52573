"""NasRNN: the recurrent cell found by neural architecture search (Zoph & Le, "Neural
Architecture Search with Reinforcement Learning", ICLR 2017), unrolled over a fixed number of
steps, as TASO's ``examples/nasrnn.py`` writes it (hidden size 512, 5 steps).

Each step computes eight ``x @ W_i + h @ U_i`` (no bias), combines them with the searched tree
of activations, and emits the new hidden state::

    m0 = relu(t0) + sigmoid(t3)       m1 = sigmoid(t1) + tanh(t2)
    m2 = sigmoid(t4) * tanh(t5)       m3 = sigmoid(t6) * relu(t7)
    m4 = sigmoid(m1) + tanh(m2)       m5 = tanh(m0) * tanh(m3)
    h' = tanh(tanh(m4) * tanh(m5))

Unlike TASO's graph (fresh weights at every step) the weights are shared across steps, as in a
real RNN; the initial state is a learned parameter (TASO: a weight tensor). Input: the sequence
``float[steps, N, hidden]``; output: the final state ``float[N, hidden]``.

Parameters (derived, no published figure): 16 * 512 * 512 + 512 = 4,194,816 (``nasrnn``);
``nasrnn_tiny`` (hidden 64, 3 steps): 65,600.
"""

from __future__ import annotations

import torch
from torch import nn


class NasCell(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.wx = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(8))
        self.wh = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(8))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        t = [wx(x) + wh(h) for wx, wh in zip(self.wx, self.wh)]
        m0 = torch.relu(t[0]) + torch.sigmoid(t[3])
        m1 = torch.sigmoid(t[1]) + torch.tanh(t[2])
        m2 = torch.sigmoid(t[4]) * torch.tanh(t[5])
        m3 = torch.sigmoid(t[6]) * torch.relu(t[7])
        m4 = torch.sigmoid(m1) + torch.tanh(m2)
        m5 = torch.tanh(m0) * torch.tanh(m3)
        return torch.tanh(torch.tanh(m4) * torch.tanh(m5))


class NasRNN(nn.Module):
    def __init__(self, hidden: int = 512, steps: int = 5) -> None:
        super().__init__()
        self.steps = steps
        self.cell = NasCell(hidden)
        self.h0 = nn.Parameter(torch.randn(1, hidden) * 0.5)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        h = self.h0.expand(xs.shape[1], -1)
        for x in xs.unbind(0):
            h = self.cell(x, h)
        return h


def nasrnn(seed: int = 0, hidden: int = 512, steps: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return NasRNN(hidden, steps).eval()


def nasrnn_tiny(seed: int = 0) -> nn.Module:
    return nasrnn(seed, hidden=64, steps=3)
