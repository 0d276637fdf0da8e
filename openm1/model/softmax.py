"""Softmax attention layer: grouped-query attention with (partial) RoPE and a KV cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from openm1.config import ModelConfig
from openm1.model.context import ForwardContext
from openm1.model.rope import apply_rotary
from openm1.model.segments import segment_attention


class SoftmaxAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, hidden: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        batch, time, _ = hidden.shape
        q = self.q_proj(hidden).view(batch, time, self.num_heads, self.head_dim)
        k = self.k_proj(hidden).view(batch, time, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden).view(batch, time, self.num_kv_heads, self.head_dim)
        q, k = apply_rotary(q, ctx.cos, ctx.sin), apply_rotary(k, ctx.cos, ctx.sin)
        if ctx.cache is not None:
            k, v = ctx.cache.update_kv(self.layer_idx, k, v)
        if ctx.segments is not None:  # packed documents or fresh left-padded rows: no [time, time] mask
            out = segment_attention(q, k, v, ctx.segments)
            return self.o_proj(out.reshape(batch, time, -1))

        mask = attention_bias(ctx, time, k.shape[1], hidden.device)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            is_causal=mask is None and time > 1,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, time, -1))


def attention_bias(ctx: ForwardContext, q_len: int, k_len: int, device: torch.device) -> torch.Tensor | None:
    """A boolean ``[batch, 1, q_len, k_len]`` mask (True = attend), or None when plain causal suffices.

    Causal with the cache offset, minus padded keys (packed documents go through ``ctx.segments``). A
    query that would see no key at all (a padding row) is allowed to see itself, so SDPA never returns
    NaN there.
    """
    if ctx.attention_bias is not None:
        return ctx.attention_bias  # built by a cache with per-row lengths
    past = k_len - q_len
    if ctx.attention_mask is None:
        if q_len == 1 or past == 0:
            return None  # plain causal (or a single query that sees everything)
    q_pos = torch.arange(q_len, device=device)[:, None] + past
    k_pos = torch.arange(k_len, device=device)[None, :]
    allowed = (k_pos <= q_pos)[None, None]
    if ctx.attention_mask is not None:
        key_ok = ctx.attention_mask[:, -k_len:].bool()
        allowed = allowed & key_ok[:, None, None, :]
        allowed = allowed | (q_pos == k_pos)[None, None]
    return allowed
