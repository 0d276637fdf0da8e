"""One decoder layer with the released residual scheme.

With ``postnorm`` (the release) the residual is the *normed* input, scaled by alpha::

    h = input_layernorm(x);          x = alpha_attn * h + beta_attn * attention(h)
    h = post_attention_layernorm(x); x = alpha_mlp  * h + beta_mlp  * moe(h)
"""

from __future__ import annotations

import torch
from torch import nn

from openm1.config import LINEAR, ModelConfig
from openm1.model.context import ForwardContext
from openm1.model.lightning import LightningAttention
from openm1.model.moe import RouterStats, SparseMoE
from openm1.model.norm import RMSNorm
from openm1.model.softmax import SoftmaxAttention


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        self.postnorm = config.postnorm
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if self.layer_type == LINEAR:
            self.self_attn: nn.Module = LightningAttention(config, layer_idx)
            self.attn_alpha, self.attn_beta = config.linear_attn_alpha_factor, config.linear_attn_beta_factor
        else:
            self.self_attn = SoftmaxAttention(config, layer_idx)
            self.attn_alpha, self.attn_beta = config.full_attn_alpha_factor, config.full_attn_beta_factor
        self.mlp = SparseMoE(config)
        self.mlp_alpha, self.mlp_beta = config.mlp_alpha_factor, config.mlp_beta_factor

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> tuple[torch.Tensor, RouterStats]:
        h = self.input_layernorm(x)
        residual = h if self.postnorm else x
        x = residual * self.attn_alpha + self.self_attn(h, ctx) * self.attn_beta
        h = self.post_attention_layernorm(x)
        residual = h if self.postnorm else x
        moe_out, stats = self.mlp(h, ctx.token_mask)
        return residual * self.mlp_alpha + moe_out * self.mlp_beta, stats
