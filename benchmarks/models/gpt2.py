"""GPT-2 (Radford et al. 2019) as Hugging Face's ``GPT2LMHeadModel`` computes it in eager mode,
without a KV cache: token + position embeddings -> pre-LN blocks (fused QKV projection, causal
explicit attention, tanh-approximated GELU) -> final LayerNorm -> LM head tied to the token
embedding.

Input ``input_ids: int64[N, seq]``; output the logits ``float[N, seq, vocab]``.

Parameters (tied head counted once):

- ``gpt2_small`` (12 layers, 768, 12 heads, vocab 50257, 1024 positions, seq 128): 124,439,808
  [124M, Hugging Face ``gpt2``];
- ``gpt2_tiny`` (quick suite: 2 layers, 128, 2 heads, vocab 1000, 64 positions, seq 32):
  532,992.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.models._common import (
    attention,
    causal_mask,
    init_transformer,
    merge_heads,
    split_heads,
)


@dataclass(frozen=True)
class GPT2Config:
    vocab: int = 50257
    positions: int = 1024
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    eps: float = 1e-5


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.ln_1 = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.c_attn = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.c_proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.ln_2 = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.c_fc = nn.Linear(cfg.hidden, 4 * cfg.hidden)
        self.act = nn.GELU(approximate="tanh")
        self.mlp_proj = nn.Linear(4 * cfg.hidden, cfg.hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.c_attn(self.ln_1(x)).split(x.shape[-1], dim=2)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        x = x + self.c_proj(merge_heads(attention(q, k, v, mask)))
        return x + self.mlp_proj(self.act(self.c_fc(self.ln_2(x))))


class GPT2(nn.Module):
    def __init__(self, cfg: GPT2Config, seq: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab, cfg.hidden)
        self.wpe = nn.Embedding(cfg.positions, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.register_buffer("position_ids", torch.arange(seq)[None], persistent=False)
        self.register_buffer("mask", causal_mask(seq), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        x = self.wte(input_ids) + self.wpe(self.position_ids[:, :seq])
        mask = self.mask[:, :, :seq, :seq]
        for block in self.blocks:
            x = block(x, mask)
        return torch.matmul(self.ln_f(x), self.wte.weight.t())  # tied LM head


def gpt2(cfg: GPT2Config, seq: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return init_transformer(GPT2(cfg, seq), seed=seed).eval()


def gpt2_small(seed: int = 0, seq: int = 128) -> nn.Module:
    return gpt2(GPT2Config(), seq, seed)


def gpt2_tiny(seed: int = 0, seq: int = 32) -> nn.Module:
    return gpt2(GPT2Config(vocab=1000, positions=64, hidden=128, layers=2, heads=2), seq, seed)
