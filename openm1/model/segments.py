"""Causal attention within packed segments, without a ``[time, time]`` mask where the GPU allows.

Packed training (``cu_seqlens``) and left-padded prefills both need the same thing: every token
attends causally to the tokens of its own segment and to nothing else. A boolean mask says that
exactly but costs ``time**2`` memory and sends SDPA to its slower masked kernel; PyTorch's flash
``varlen_attn`` takes the segment boundaries instead. This module uses it on CUDA (half precision,
head dims flash supports) and builds the equivalent mask everywhere else, so both paths give the same
answer and the CPU tests check the semantics the GPU kernel is compared against.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["Segments", "document_ids", "flash_varlen_usable", "segment_attention", "segment_mask"]

_DISABLE = "OPENM1_VARLEN_ATTENTION"


@dataclass(frozen=True)
class Segments:
    """Segment boundaries over the flattened ``batch * time`` tokens of one forward.

    ``cu_seqlens`` are int32 offsets on the model's device (``[0, ..., batch * time]``, non-decreasing;
    an empty segment is allowed); row boundaries must be segment boundaries. ``max_len`` bounds the
    longest segment from above (a host int, so nobody reads the offsets back from the GPU).
    """

    cu_seqlens: torch.Tensor
    max_len: int


@lru_cache(maxsize=1)
def _varlen_api() -> tuple[object, dict[str, object]] | None:
    """PyTorch's varlen flash attention and the keyword that asks it for causal masking, if present."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch older than 2.9
        return None
    params = inspect.signature(varlen_attn).parameters
    if "window_size" in params:
        causal: dict[str, object] = {"window_size": (-1, 0)}
    elif "is_causal" in params:
        causal = {"is_causal": True}
    else:
        return None
    if "enable_gqa" in params:
        causal["enable_gqa"] = True
    return varlen_attn, causal


def flash_varlen_usable(q: torch.Tensor) -> bool:
    """Whether ``q`` ``[batch, time, heads, dim]`` can go to the flash varlen kernel."""
    if os.environ.get(_DISABLE, "1") == "0" or not q.is_cuda:
        return False
    if q.dtype not in (torch.float16, torch.bfloat16):
        return False
    dim = q.shape[-1]
    if dim % 8 or dim > 256 or torch.cuda.get_device_capability(q.device)[0] < 8:
        return False
    return _varlen_api() is not None


def document_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Index of the packed document (segment) each of ``total`` positions belongs to."""
    positions = torch.arange(total, device=cu_seqlens.device)
    return torch.searchsorted(cu_seqlens[1:].long(), positions, right=True)


def segment_mask(segments: Segments, batch: int, time: int) -> torch.Tensor:
    """The boolean ``[batch, 1, time, time]`` mask (True = attend) that the segments mean."""
    doc = document_ids(segments.cu_seqlens, batch * time).view(batch, time)
    pos = torch.arange(time, device=doc.device)
    causal = pos[None, :] <= pos[:, None]
    return ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Segments) -> torch.Tensor:
    """Causal attention within segments: ``q`` ``[batch, time, heads, dim]``, ``k``/``v`` with
    ``kv_heads`` dividing ``heads``; returns ``[batch, time, heads, dim]``."""
    batch, time, heads, dim = q.shape
    kv_heads = k.shape[2]
    if flash_varlen_usable(q):
        varlen_attn, options = _varlen_api()  # type: ignore[misc]
        if kv_heads != heads and "enable_gqa" not in options:
            k = k.repeat_interleave(heads // kv_heads, dim=2)
            v = v.repeat_interleave(heads // kv_heads, dim=2)
        cu = segments.cu_seqlens
        out = varlen_attn(
            q.reshape(batch * time, heads, dim),
            k.reshape(batch * time, k.shape[2], dim),
            v.reshape(batch * time, v.shape[2], dim),
            cu,
            cu,
            segments.max_len,
            segments.max_len,
            **options,
        )
        return out.view(batch, time, heads, dim)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=segment_mask(segments, batch, time),
        enable_gqa=kv_heads != heads,
    )
    return out.transpose(1, 2)
