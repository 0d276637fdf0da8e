"""What every layer of one forward pass needs to know besides its input: positions, masks, cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ForwardContext:
    cos: torch.Tensor
    """RoPE cosines ``[batch, time, rotary_dim]``."""
    sin: torch.Tensor
    token_mask: torch.Tensor | None
    """``[batch, time]``, 1 for real tokens of this forward, 0 for padding; None when there is none."""
    attention_mask: torch.Tensor | None
    """``[batch, past + time]`` padding mask over every position the softmax layers can see, or None."""
    past_length: int
    """Tokens already in the cache before this forward."""
    cache: object | None
    cu_seqlens: torch.Tensor | None
    """Packed variable-length sequences (batch 1): cumulative offsets ``[num_seqs + 1]``."""
