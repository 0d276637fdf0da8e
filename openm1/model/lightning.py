"""Lightning attention layer, as released: fused per-head q/k/v, SiLU, decayed linear attention,
RMSNorm over all heads, sigmoid output gate, output projection.

The attention itself is :func:`openm1.ops.lightning_attn` (chunked, for prefill and training) and
:func:`openm1.ops.lightning_attn_step` (one token, for decoding); this file is only the layer around it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from openm1.config import ModelConfig
from openm1.model.context import ForwardContext
from openm1.model.norm import Float32Buffers, RMSNorm
from openm1.ops import lightning_attn, lightning_attn_step, lightning_decay_slopes


class LightningAttention(Float32Buffers):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        inner = self.num_heads * self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * inner, bias=False)
        self.output_gate = nn.Linear(config.hidden_size, inner, bias=False)
        self.out_proj = nn.Linear(inner, config.hidden_size, bias=False)
        self.norm = RMSNorm(inner, eps=config.lightning_norm_eps)
        # Derived from the layer index, never loaded: the released decay depends on depth.
        self.register_buffer("slopes", torch.empty(self.num_heads), persistent=False)
        self.init_derived_buffers()

    def init_derived_buffers(self) -> None:
        """(Re)compute the decay rates, e.g. after the model was built on the meta device."""
        slopes = lightning_decay_slopes(self.num_heads, self.layer_idx, self.num_layers)
        with torch.no_grad():
            if self.slopes.is_meta:
                self.slopes = slopes
            else:
                self.slopes = slopes.to(self.slopes.device)

    def forward(self, hidden: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        batch, time, _ = hidden.shape
        qkv = F.silu(self.qkv_proj(hidden))
        if ctx.token_mask is not None:
            # Padding contributes nothing: zero k and v leave the state as it was.
            qkv = qkv * ctx.token_mask[:, :, None].to(qkv.dtype)
        # The released layout is per head: [H, 3D] with q, k, v side by side inside each head.
        q, k, v = qkv.view(batch, time, self.num_heads, 3 * self.head_dim).split(self.head_dim, dim=-1)

        cache = ctx.cache
        state = cache.get_state(self.layer_idx) if cache is not None else None
        if state is not None and time == 1 and ctx.cu_seqlens is None:
            out = lightning_attn_step(q, k, v, self.slopes, state)  # updates `state` in place
        else:
            out, final_state = lightning_attn(
                q,
                k,
                v,
                self.slopes,
                initial_state=state,
                output_final_state=cache is not None,
                cu_seqlens=ctx.cu_seqlens,
            )
            if cache is not None:
                cache.set_state(self.layer_idx, final_state)

        return self.out_proj(self.gated_norm(out.reshape(batch, time, -1), hidden))

    def gated_norm(self, out: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """RMSNorm over all heads, then the sigmoid output gate (its own method: inference fuses it)."""
        return torch.sigmoid(self.output_gate(hidden)) * self.norm(out)
