"""What every layer of one forward pass needs to know besides its input: positions, masks, cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from openm1.model.segments import Segments


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
    attention_bias: torch.Tensor | None = None
    """A ready boolean ``[batch, 1, time, keys]`` softmax mask (True = attend) from a cache that keeps
    per-row lengths (see :class:`CacheLayout`); when set, the softmax layers use it as is."""
    segments: Segments | None = None
    """Causal attention within packed segments of this forward's own tokens (packed documents, or
    fresh left-padded rows); when set, the softmax layers attend this way and ignore the masks."""


@dataclass
class CacheLayout:
    """Where one forward's tokens sit in a cache that keeps a length per row (the generation engine's).

    Such a cache has a ``layout(attention_mask, time)`` method; the model then takes positions, the
    padding mask and the softmax mask from it instead of deriving them from one shared past length.
    """

    position_ids: torch.Tensor
    """``[batch, time]`` RoPE positions (each row counts its own real tokens)."""
    token_mask: torch.Tensor | None
    """``[batch, time]``, 1 for real tokens, 0 for padding; None when there is none."""
    attention_bias: torch.Tensor | None
    """Boolean ``[batch, 1, time, keys]`` over the keys the cache's ``update_kv`` returns; None when
    plain causal attention over this forward's tokens is right (every row starts empty, no padding)."""
    segments: Segments | None = None
    """Instead of ``attention_bias``: causal attention within these segments of this forward's own
    tokens (every row fresh, its padding one segment and its prompt another); the cache's
    ``update_kv`` then returns this forward's own keys and values."""
