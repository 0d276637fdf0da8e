"""Input validation shared by every lightning-attention form.

Errors name the argument, the expected and found shapes, and the fix, because a silent broadcast
in a linear-attention kernel produces plausible-looking garbage rather than a crash. Everything
here reads only tensor metadata, except cu_seqlens, whose values are needed on the host anyway.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Dims(NamedTuple):
    batch: int
    length: int
    heads: int
    dim_k: int
    dim_v: int


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype state and products are accumulated in: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _shape(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def check_qkv(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, fn: str = "lightning_attn") -> Dims:
    """Validate q, k, v [batch, time, heads, dim] and slopes [heads]; return the sizes."""
    for name, x in (("q", q), ("k", k), ("v", v), ("slopes", slopes)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{fn}: {name} must be a torch.Tensor, found {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(
                f"{fn}: {name} must have a floating dtype, found {x.dtype}; "
                "cast it with .float() or .bfloat16()"
            )
    if q.dim() != 4:
        raise ValueError(f"{fn}: q must be 4-D [batch, time, heads, dim_k], found shape {_shape(q)}")
    batch, length, heads, dim_k = q.shape
    if k.shape != q.shape:
        raise ValueError(
            f"{fn}: k must have the shape of q [batch, time, heads, dim_k]; "
            f"expected {_shape(q)}, found {_shape(k)}"
        )
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"{fn}: v must be [batch, time, heads, dim_v] matching q in its first three dims; "
            f"expected ({batch}, {length}, {heads}, dim_v), found {_shape(v)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(
            f"{fn}: q, k, v must share one dtype, found {q.dtype}, {k.dtype}, {v.dtype}; "
            "cast them to one dtype"
        )
    if slopes.dim() != 1 or slopes.shape[0] != heads:
        raise ValueError(
            f"{fn}: slopes must be 1-D with one decay rate per head; expected ({heads},), found "
            f"{_shape(slopes)}; build it with lightning_decay_slopes(num_heads, layer_idx, num_layers)"
        )
    for name, x in (("k", k), ("v", v), ("slopes", slopes)):
        if x.device != q.device:
            raise ValueError(f"{fn}: {name} is on {x.device} but q is on {q.device}; move them to one device")
    return Dims(batch, length, heads, dim_k, int(v.shape[-1]))


def check_state(
    state: Tensor, expected: tuple[int, ...], device: torch.device, name: str, fn: str = "lightning_attn"
) -> None:
    """Validate a recurrent state [sequences, heads, dim_k, dim_v]."""
    if not isinstance(state, Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, found {type(state).__name__}")
    if not state.is_floating_point():
        raise ValueError(f"{fn}: {name} must be floating point (float32), found {state.dtype}")
    if _shape(state) != tuple(expected):
        raise ValueError(
            f"{fn}: {name} must be [sequences, heads, dim_k, dim_v]; expected {tuple(expected)}, "
            f"found {_shape(state)} (with cu_seqlens there is one row per packed sequence)"
        )
    if state.device != device:
        raise ValueError(f"{fn}: {name} is on {state.device} but q is on {device}; move it to q's device")


def check_cu_seqlens(cu_seqlens: Tensor, batch: int, total: int, fn: str = "lightning_attn") -> list[int]:
    """Validate packed-sequence offsets and return them as a host list (the one device sync)."""
    if not isinstance(cu_seqlens, Tensor) or cu_seqlens.dtype not in (torch.int32, torch.int64):
        found = cu_seqlens.dtype if isinstance(cu_seqlens, Tensor) else type(cu_seqlens).__name__
        raise ValueError(f"{fn}: cu_seqlens must be an int32/int64 tensor of offsets, found {found}")
    if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(
            f"{fn}: cu_seqlens must be 1-D [num_sequences + 1] like [0, len0, len0 + len1, ...], "
            f"found shape {_shape(cu_seqlens)}"
        )
    if batch != 1:
        raise ValueError(
            f"{fn}: with cu_seqlens the sequences are packed along time, so q/k/v must have batch size 1 "
            f"([1, total, heads, dim]); found batch {batch}. "
            "Flatten to [1, batch * time, ...] or drop cu_seqlens"
        )
    offsets = [int(x) for x in cu_seqlens.tolist()]
    if offsets[0] != 0:
        raise ValueError(f"{fn}: cu_seqlens must start at 0, found {offsets[0]}")
    bad = next((i for i in range(1, len(offsets)) if offsets[i] < offsets[i - 1]), None)
    if bad is not None:
        raise ValueError(
            f"{fn}: cu_seqlens must be non-decreasing (cumulative lengths); "
            f"found cu_seqlens[{bad - 1}]={offsets[bad - 1]} > cu_seqlens[{bad}]={offsets[bad]}"
        )
    if offsets[-1] != total:
        raise ValueError(
            f"{fn}: cu_seqlens must end at the packed length q.shape[1]={total}, found {offsets[-1]}"
        )
    return offsets


def check_block_size(block_size: int, fn: str = "lightning_attn") -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"{fn}: block_size must be a positive int, found {block_size!r}")
