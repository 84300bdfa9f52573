"""A Llama-style decoder (Touvron et al. 2023) as Hugging Face's ``LlamaForCausalLM`` computes it
in eager mode, without a KV cache: token embedding -> pre-norm blocks (RMSNorm; rotary position
embeddings computed in the graph from the positions; grouped-query attention, the KV heads
repeated to the query heads; causal explicit attention; SwiGLU MLP) -> final RMSNorm -> untied
LM head. No biases anywhere.

Input ``input_ids: int64[N, seq]``; output the logits ``float[N, seq, vocab]``.

Parameters (derived from the configuration; the published Llama models are far larger):

- ``llama_small`` (4 layers, hidden 512, 8 heads / 2 KV heads of 64, SwiGLU 1536, vocab 32000,
  seq 128): 44,831,232 (16,384,000 each in the embedding and the head, 3,015,680 per layer);
- ``llama_tiny`` (quick suite: 2 layers, hidden 128, 4 heads / 2 KV heads, SwiGLU 384,
  vocab 1000, seq 32): 649,856.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.models._common import (
    RMSNorm,
    attention,
    causal_mask,
    init_transformer,
    merge_heads,
    split_heads,
)


@dataclass(frozen=True)
class LlamaConfig:
    vocab: int = 32000
    hidden: int = 512
    layers: int = 4
    heads: int = 8
    kv_heads: int = 2
    intermediate: int = 1536
    eps: float = 1e-6
    rope_theta: float = 10000.0


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``[N, kv, seq, d]`` -> ``[N, kv * n_rep, seq, d]`` (each KV head serves n_rep queries)."""
    if n_rep == 1:
        return x
    n, kv, s, d = x.shape
    return x[:, :, None].expand(n, kv, n_rep, s, d).reshape(n, kv * n_rep, s, d)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads = cfg.heads, cfg.kv_heads
        d = cfg.hidden // cfg.heads
        self.q_proj = nn.Linear(cfg.hidden, cfg.heads * d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.heads * d, cfg.hidden, bias=False)

    def forward(self, x, cos, sin, mask) -> torch.Tensor:
        q = split_heads(self.q_proj(x), self.heads)
        k = split_heads(self.k_proj(x), self.kv_heads)
        v = split_heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.heads // self.kv_heads
        out = attention(q, repeat_kv(k, rep), repeat_kv(v, rep), mask)
        return self.o_proj(merge_heads(out))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden, cfg.eps)
        self.attn = Attention(cfg)
        self.post_attn_norm = RMSNorm(cfg.hidden, cfg.eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask) -> torch.Tensor:
        x = x + self.attn(self.input_norm(x), cos, sin, mask)
        return x + self.mlp(self.post_attn_norm(x))


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig, seq: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        d = cfg.hidden // cfg.heads
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("position_ids", torch.arange(seq)[None], persistent=False)
        self.register_buffer("mask", causal_mask(seq), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        x = self.embed(input_ids)
        # rotary tables, computed as HF computes them (in the graph, from the positions)
        pos = self.position_ids[:, :seq].float()
        freqs = pos[:, :, None] * self.inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        mask = self.mask[:, :, :seq, :seq]
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


def llama(cfg: LlamaConfig, seq: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return init_transformer(Llama(cfg, seq), seed=seed).eval()


def llama_small(seed: int = 0, seq: int = 128) -> nn.Module:
    return llama(LlamaConfig(), seq, seed)


def llama_tiny(seed: int = 0, seq: int = 32) -> nn.Module:
    cfg = LlamaConfig(vocab=1000, hidden=128, layers=2, heads=4, kv_heads=2, intermediate=384)
    return llama(cfg, seq, seed)
