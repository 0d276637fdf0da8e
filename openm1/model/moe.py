"""Mixture of experts as released: a float32 softmax router, top-k with renormalised weights, SwiGLU
experts, and the Switch-style load-balancing statistics.

Expert weights are held fused, as transformers holds them in memory: ``gate_up_proj [E, 2I, hidden]``
(gate rows first, then up) and ``down_proj [E, hidden, I]``. On disk they are per expert (w1, w3, w2);
:mod:`openm1.model.checkpoint` converts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openm1.config import ModelConfig


class TopKRouter(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.weight = nn.Parameter(torch.empty(config.num_local_experts, config.hidden_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Full routing probabilities (float32), top-k weights renormalised to sum to 1, top-k indices."""
        logits = F.linear(x.float(), self.weight.float())
        probs = torch.softmax(logits, dim=-1)
        top_w, top_i = torch.topk(probs, self.top_k, dim=-1)
        return probs, top_w / top_w.sum(dim=-1, keepdim=True), top_i


class Experts(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        e, i, h = config.num_local_experts, config.intermediate_size, config.hidden_size
        self.num_experts = e
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))
        self.down_proj = nn.Parameter(torch.empty(e, h, i))

    def forward(self, x: torch.Tensor, top_w: torch.Tensor, top_i: torch.Tensor) -> torch.Tensor:
        """``x [tokens, hidden]``; each token's top-k expert outputs, weighted and summed.

        Reference path: tokens are grouped by expert with one sort, then each used expert runs one
        matmul pair on its contiguous slice.
        """
        num_tokens, top_k = top_i.shape
        flat_expert = top_i.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        token_of = order // top_k
        counts = torch.bincount(flat_expert, minlength=self.num_experts).tolist()
        weights = top_w.reshape(-1)[order].to(x.dtype)
        out = torch.zeros_like(x)
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            rows = token_of[start : start + count]
            gate, up = F.linear(x[rows], self.gate_up_proj[expert]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.down_proj[expert])
            out.index_add_(0, rows, y * weights[start : start + count, None])
            start += count
        return out


@dataclass
class RouterStats:
    """Per-layer sums the load-balancing loss needs (accumulated over layers as transformers does)."""

    tokens_per_expert: torch.Tensor  # [E], top-k assignments (mask-weighted)
    prob_per_expert: torch.Tensor  # [E], summed routing probabilities (differentiable)
    rows: torch.Tensor  # scalar, counted tokens


class SparseMoE(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_experts = config.num_local_experts
        self.gate = TopKRouter(config)
        self.experts = Experts(config)

    def forward(
        self, hidden: torch.Tensor, token_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, RouterStats]:
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])
        probs, top_w, top_i = self.gate(x)
        out = self.experts(x, top_w, top_i).reshape(shape)
        weight = (
            torch.ones(x.shape[0], device=x.device)
            if token_mask is None
            else token_mask.reshape(-1).to(device=x.device, dtype=torch.float32)
        )
        assigned = torch.zeros(self.num_experts, device=x.device, dtype=torch.float32)
        assigned.scatter_add_(0, top_i.reshape(-1), weight.repeat_interleave(top_i.shape[1]))
        stats = RouterStats(assigned, (probs * weight[:, None]).sum(0), weight.sum())
        return out, stats


def load_balancing_loss(stats: list[RouterStats], num_experts: int) -> torch.Tensor:
    """Switch/Mixtral auxiliary loss ``E * sum_e f_e * P_e``, with ``f`` the fraction of top-k
    assignments and ``P`` the mean routing probability, both pooled over all layers' tokens
    (transformers' convention, so the two agree)."""
    rows = torch.stack([s.rows for s in stats]).sum()
    f = torch.stack([s.tokens_per_expert for s in stats]).sum(0) / rows
    p = torch.stack([s.prob_per_expert for s in stats]).sum(0) / rows
    return (f * p).sum() * num_experts
