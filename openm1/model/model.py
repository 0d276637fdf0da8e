"""The MiniMax-M1 causal language model: embeddings, hybrid decoder layers, final norm, LM head.

Parameter names follow transformers' ``MiniMaxForCausalLM`` in memory (``model.layers.N.mlp.experts.
gate_up_proj`` ...), so state dicts move between the two without renaming.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openm1.config import ModelConfig
from openm1.model.block import DecoderLayer
from openm1.model.cache import HybridCache
from openm1.model.context import ForwardContext
from openm1.model.lightning import LightningAttention
from openm1.model.moe import Experts, TopKRouter, load_balancing_loss
from openm1.model.norm import RMSNorm
from openm1.model.rope import RotaryEmbedding
from openm1.model.segments import Segments


@dataclass
class CausalLMOutput:
    logits: torch.Tensor
    """``[batch, kept time, vocab]``; float32 when the config keeps the LM head in float32."""
    router_loss: torch.Tensor
    """The load-balancing loss (unweighted; multiply by the coefficient of your schedule)."""
    cache: HybridCache | None
    hidden_states: torch.Tensor
    """Final-norm output ``[batch, time, hidden]``, for heads other than the LM head."""


class LMHead(nn.Linear):
    """The output projection. With ``fp32`` its product is computed in float32 and (unless tied to the
    embeddings) its weight stays float32 through ``model.to(bf16)``: the paper's fix for the mismatch
    between training and rollout probabilities."""

    def __init__(self, hidden: int, vocab: int, fp32: bool, tied: bool) -> None:
        super().__init__(hidden, vocab, bias=False)
        self.fp32 = fp32
        self.keep_fp32_weight = fp32 and not tied

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - torch's signature
        super()._apply(fn, recurse)
        if self.keep_fp32_weight and self.weight.is_floating_point() and self.weight.dtype != torch.float32:
            self.weight.data = self.weight.data.float()
        return self

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.fp32:
            return F.linear(hidden.float(), self.weight.float())
        return F.linear(hidden, self.weight)


class MiniMaxM1Model(nn.Module):
    """The decoder stack without the LM head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config.rotary_dim, config.rope_theta)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: HybridCache | None = None,
        cu_seqlens: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch, time, _ = x.shape
        past = cache.get_seq_length() if cache is not None else 0
        bias = None
        if cache is not None and hasattr(cache, "layout"):
            # A cache with per-row lengths places the tokens itself: ``attention_mask`` is then
            # ``[batch, time]`` (this forward's padding only) and positions count each row's own tokens.
            if cu_seqlens is not None:
                raise ValueError("cu_seqlens cannot be combined with a cache that keeps per-row lengths")
            layout = cache.layout(attention_mask, time)
            token_mask, attention_mask, bias = layout.token_mask, None, layout.attention_bias
            segments = layout.segments
            if position_ids is None:
                position_ids = layout.position_ids
        else:
            token_mask, attention_mask = _check_masks(attention_mask, batch, time, past)
            segments = None
            if cu_seqlens is not None:
                _check_packed(cu_seqlens, batch, time, past, attention_mask)
                segments = Segments(cu_seqlens.to(device=x.device, dtype=torch.int32), time)
        if position_ids is None:
            position_ids = default_position_ids(attention_mask, cu_seqlens, batch, time, past, x.device)
        elif position_ids.shape[-1] != time:
            raise ValueError(f"position_ids has {position_ids.shape[-1]} positions but the input has {time}")
        cos, sin = self.rotary(position_ids.expand(batch, time), x.dtype)
        ctx = ForwardContext(cos, sin, token_mask, attention_mask, past, cache, cu_seqlens, bias, segments)
        stats = []
        for layer in self.layers:
            x, layer_stats = layer(x, ctx)
            stats.append(layer_stats)
        if cache is not None:
            cache.advance(time)
        return self.norm(x), load_balancing_loss(stats, self.config.num_local_experts)


class MiniMaxM1ForCausalLM(nn.Module):
    """MiniMax-M1 for next-token prediction. ``forward`` returns logits and the router loss."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = MiniMaxM1Model(config)
        self.lm_head = LMHead(
            config.hidden_size, config.vocab_size, config.lm_head_fp32, config.tie_word_embeddings
        )
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh weights: normal(0, initializer_range) for matrices, ones for norms."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, TopKRouter)):
                if not module.weight.is_meta:
                    module.weight.normal_(0.0, std)
            elif isinstance(module, Experts):
                if not module.gate_up_proj.is_meta:
                    module.gate_up_proj.normal_(0.0, std)
                    module.down_proj.normal_(0.0, std)
            elif isinstance(module, RMSNorm) and not module.weight.is_meta:
                module.weight.fill_(1.0)

    def init_derived_buffers(self) -> None:
        """Recompute buffers that are functions of the config (decay rates, RoPE frequencies)."""
        for module in self.modules():
            if isinstance(module, LightningAttention):
                module.init_derived_buffers()
        rot = self.model.rotary
        fresh = RotaryEmbedding(rot.rotary_dim, self.config.rope_theta)
        device = rot.inv_freq.device if not rot.inv_freq.is_meta else "cpu"
        rot.inv_freq = fresh.inv_freq.to(device)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: HybridCache | None = None,
        cu_seqlens: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> CausalLMOutput:
        """Logits for ``input_ids [batch, time]``.

        ``attention_mask`` ``[batch, past + time]`` marks real tokens (left padding for batches);
        ``position_ids`` default to counting real tokens only; ``cache`` (a :class:`HybridCache`) makes
        the call incremental; ``cu_seqlens`` packs several documents into batch 1 with no attention
        across them; ``logits_to_keep = n > 0`` computes the LM head on the last n positions only.
        """
        hidden, router_loss = self.model(
            input_ids, attention_mask, position_ids, cache, cu_seqlens, inputs_embeds=inputs_embeds
        )
        kept = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
        return CausalLMOutput(self.lm_head(kept), router_loss, cache, hidden)

    def new_cache(self) -> HybridCache:
        return HybridCache()

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, folder: str | os.PathLike, max_shard_bytes: int = 5 * 2**30) -> None:
        """Write ``config.json`` and safetensors in transformers' ``minimax`` layout (atomically)."""
        from openm1.model.checkpoint import save_pretrained

        save_pretrained(self, folder, max_shard_bytes=max_shard_bytes)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **kwargs) -> MiniMaxM1ForCausalLM:  # noqa: ANN003
        from openm1.model.checkpoint import from_pretrained

        return from_pretrained(folder, **kwargs)

    def num_parameters(self, active: bool = False) -> int:
        """Parameters (unique tensors); with ``active``, those a token uses (top-k of the experts)."""
        total = sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
        if not active:
            return total
        c = self.config
        experts = sum(
            layer.mlp.experts.gate_up_proj.numel() + layer.mlp.experts.down_proj.numel()
            for layer in self.model.layers
        )
        return total - experts + experts * c.num_experts_per_tok // c.num_local_experts


# ---------------------------------------------------------------------- input checks and defaults
def _check_masks(
    attention_mask: torch.Tensor | None, batch: int, time: int, past: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validate the 2D padding mask; return (mask over this forward's tokens, mask over all tokens)."""
    if attention_mask is None:
        return None, None
    if attention_mask.dim() != 2 or attention_mask.shape[0] != batch:
        raise ValueError(
            f"attention_mask must be [batch, past + time] = [{batch}, {past + time}], "
            f"got {list(attention_mask.shape)}"
        )
    if attention_mask.shape[1] == time and past > 0:
        raise ValueError(
            f"attention_mask covers only the {time} new tokens but the cache holds {past}: pass the mask "
            f"over all {past + time} positions, as transformers does"
        )
    if attention_mask.shape[1] != past + time:
        raise ValueError(
            f"attention_mask has {attention_mask.shape[1]} positions, expected past + time = {past + time}"
        )
    if bool(attention_mask.all()):
        return None, None  # nothing is padded: take the fast paths
    return attention_mask[:, -time:], attention_mask


def _check_packed(
    cu_seqlens: torch.Tensor, batch: int, time: int, past: int, attention_mask: torch.Tensor | None
) -> None:
    """Validate packed offsets (one read back to the host)."""
    if batch != 1:
        raise ValueError(f"packed sequences (cu_seqlens) need batch 1, got batch {batch}")
    if past:
        raise ValueError("cu_seqlens with a non-empty cache is not supported: prefill packed, decode batched")
    if attention_mask is not None:
        raise ValueError("pass either cu_seqlens (packed) or a padding attention_mask, not both")
    bounds = cu_seqlens.tolist() if cu_seqlens.dim() == 1 else None
    if not bounds or bounds[0] != 0 or bounds[-1] != time:
        raise ValueError(
            f"cu_seqlens must be 1-D, start at 0 and end at the packed length {time}; "
            f"got {cu_seqlens.tolist()}"
        )
    if any(hi < lo for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)):
        raise ValueError(f"cu_seqlens must not decrease; got {bounds}")


def default_position_ids(
    attention_mask: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    batch: int,
    time: int,
    past: int,
    device: torch.device,
) -> torch.Tensor:
    """Positions that count real tokens only (left padding shifts nothing) and restart per document."""
    if attention_mask is not None:
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return pos[:, -time:]
    pos = torch.arange(past, past + time, device=device)
    if cu_seqlens is not None:
        from openm1.model.segments import document_ids

        pos = pos - cu_seqlens.to(device)[document_ids(cu_seqlens.to(device), time)]
    return pos[None].expand(batch, time)
