"""BERT encoder (BertModel without the pooler), for embedding models such as all-MiniLM-L6-v2.

Post-norm transformer: embeddings (word + absolute position + token type) -> LayerNorm, then per
layer self-attention -> dense -> add & LayerNorm, GELU MLP -> add & LayerNorm. HF parameter
names, so checkpoints load by name; the model does no I/O.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, L, H] -> [B, heads, L, H / heads]
            return t.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        # SDPA's default scale, 1/sqrt(head_dim), is BERT's.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, heads, L, d]
        return out.transpose(1, 2).reshape(batch, length, hidden)


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.attention = nn.Module()
        self.attention.self = _SelfAttention(hidden, heads)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(hidden, hidden)
        self.attention.output.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden, intermediate)
        self.output = nn.Module()
        self.output.dense = nn.Linear(intermediate, hidden)
        self.output.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attn = self.attention.output.dense(self.attention.self(x, mask))
        x = self.attention.output.LayerNorm(x + attn)
        mlp = self.output.dense(F.gelu(self.intermediate.dense(x)))  # exact (erf) GELU, as BERT
        return self.output.LayerNorm(x + mlp)


class BertEncoder(nn.Module):
    """Token ids [B, L] + attention mask [B, L] -> last hidden states [B, L, H]."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        hidden = config["hidden_size"]
        eps = config.get("layer_norm_eps", 1e-12)
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported BERT activation {config['hidden_act']!r}")
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
        self.embeddings.position_embeddings = nn.Embedding(
            config["max_position_embeddings"], hidden
        )
        self.embeddings.token_type_embeddings = nn.Embedding(
            config.get("type_vocab_size", 2), hidden
        )
        self.embeddings.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            _Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )
        self.max_positions = config["max_position_embeddings"]
        self.hidden_size = hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        positions = torch.arange(length, device=input_ids.device)
        emb = self.embeddings
        x = (
            emb.word_embeddings(input_ids)
            + emb.position_embeddings(positions)[None]
            + emb.token_type_embeddings(torch.zeros_like(input_ids))
        )
        x = emb.LayerNorm(x)  # [B, L, H]
        # Additive key mask [B, 1, 1, L]: padding keys get a large negative score.
        keep = attention_mask[:, None, None, :].to(x.dtype)
        mask = (1.0 - keep) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states [B, L, H] over the non-padding tokens -> [B, H]."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
