"""BERT encoder (Devlin et al., NAACL 2019) as Hugging Face's ``BertModel`` computes it in eager
mode: word + position + token-type embeddings -> LayerNorm -> post-LN Transformer layers (explicit
attention with an additive padding mask, erf GELU), no pooler.

Inputs ``input_ids: int64[N, seq]`` and ``attention_mask: int64[N, seq]`` (1 = attend); output
the last hidden state ``float[N, seq, hidden]``. Token types are all 0 (a constant).

Parameters (this code, WITH embeddings, without the pooler):

- ``bert_base`` (12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522, seq 128): 108,891,648
  [~110M with embeddings: 109,482,240 incl. the 0.59M pooler; 85,054,464 in the 12 layers alone];
- ``bert_tiny`` (quick suite: 2 layers, hidden 128, 2 heads, FFN 512, vocab 1000, seq 32):
  590,592.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.models._common import attention, init_transformer, merge_heads, split_heads


@dataclass(frozen=True)
class BertConfig:
    vocab: int = 30522
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    ffn: int = 3072
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_out = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.intermediate = nn.Linear(cfg.hidden, cfg.ffn)
        self.gelu = nn.GELU()
        self.output = nn.Linear(cfg.ffn, cfg.hidden)
        self.out_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(f(x), self.heads) for f in (self.query, self.key, self.value))
        a = merge_heads(attention(q, k, v, mask))
        x = self.attn_norm(self.attn_out(a) + x)
        return self.out_norm(self.output(self.gelu(self.intermediate(x))) + x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig, seq: int) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab, cfg.hidden)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.layers))
        self.register_buffer("position_ids", torch.arange(seq)[None], persistent=False)
        self.register_buffer("token_type_ids", torch.zeros(1, seq, dtype=torch.long), False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        x = (
            self.word(input_ids)
            + self.token_type(self.token_type_ids[:, :seq])
            + self.position(self.position_ids[:, :seq])
        )
        x = self.norm(x)
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask)
        return x


def bert(cfg: BertConfig, seq: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return init_transformer(BertEncoder(cfg, seq), seed=seed).eval()


def bert_base(seed: int = 0, seq: int = 128) -> nn.Module:
    return bert(BertConfig(), seq, seed)


def bert_tiny(seed: int = 0, seq: int = 32) -> nn.Module:
    return bert(BertConfig(vocab=1000, hidden=128, layers=2, heads=2, ffn=512), seq, seed)
