"""The T5-small encoder (Raffel et al., JMLR 2020) as Hugging Face's ``T5EncoderModel`` computes it
in eager mode: shared token embedding -> 6 pre-norm blocks (T5 LayerNorm: RMS, no mean, no bias;
attention without the 1/sqrt(d) scaling, plus a bucketed relative position bias computed by the
first layer and shared by all; ReLU feed-forward 2048, no biases) -> final T5 LayerNorm.

The relative position buckets (bidirectional, 32 buckets, max distance 128) are computed once
with HF's formula when the module is built, for the model's fixed sequence length; the bias
lookup itself (an embedding gather) stays in the graph.

Input ``input_ids: int64[N, seq]``; output the last hidden state ``float[N, seq, 512]``.

Parameters: 35,330,816 [~35M: T5-small is 60.5M with its decoder; the encoder with the shared
embedding (16,449,536) has 35.3M]; seq 128.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from benchmarks.models._common import RMSNorm, attention, init_transformer, merge_heads, split_heads


def relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """HF's ``T5Attention._relative_position_bucket`` (bidirectional)."""
    num_buckets //= 2
    buckets = (relative_position > 0).to(torch.long) * num_buckets
    relative_position = torch.abs(relative_position)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    large = max_exact + (
        torch.log(relative_position.float() / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, relative_position, large)


class T5Block(nn.Module):
    def __init__(self, d_model: int, heads: int, d_kv: int, d_ff: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * d_kv
        self.attn_norm = RMSNorm(d_model, eps)
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, inner, bias=False)
        self.v = nn.Linear(d_model, inner, bias=False)
        self.o = nn.Linear(inner, d_model, bias=False)
        self.ff_norm = RMSNorm(d_model, eps)
        self.wi = nn.Linear(d_model, d_ff, bias=False)
        self.wo = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        h = self.attn_norm(x)
        q, k, v = (split_heads(f(h), self.heads) for f in (self.q, self.k, self.v))
        x = x + self.o(merge_heads(attention(q, k, v, position_bias, scale=1.0)))
        return x + self.wo(torch.relu(self.wi(self.ff_norm(x))))


class T5Encoder(nn.Module):
    def __init__(
        self,
        seq: int,
        vocab: int = 32128,
        d_model: int = 512,
        layers: int = 6,
        heads: int = 8,
        d_kv: int = 64,
        d_ff: int = 2048,
        buckets: int = 32,
        max_distance: int = 128,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.shared = nn.Embedding(vocab, d_model)
        self.relative_attention_bias = nn.Embedding(buckets, heads)
        self.blocks = nn.ModuleList(T5Block(d_model, heads, d_kv, d_ff, eps) for _ in range(layers))
        self.final_norm = RMSNorm(d_model, eps)
        pos = torch.arange(seq)
        bucket = relative_position_bucket(pos[None, :] - pos[:, None], buckets, max_distance)
        self.register_buffer("buckets", bucket, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.shared(input_ids)
        seq = input_ids.shape[1]
        bias = self.relative_attention_bias(self.buckets[:seq, :seq])  # [q, k, heads]
        bias = bias.permute(2, 0, 1)[None]
        for block in self.blocks:
            x = block(x, bias)
        return self.final_norm(x)


def t5_small_encoder(seed: int = 0, seq: int = 128) -> nn.Module:
    torch.manual_seed(seed)
    model = init_transformer(T5Encoder(seq), std=0.05, seed=seed)
    with torch.no_grad():
        model.shared.weight.normal_(0.0, 1.0)  # T5 does not scale its embedding output
        model.relative_attention_bias.weight.normal_(0.0, 1.0)
    return model.eval()
