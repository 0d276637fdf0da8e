"""Chunked (block-parallel) lightning attention: the pure-PyTorch / CPU path.

Inside a block of B tokens the output is a masked, decayed ``(Q K^T) V``, computed for all blocks
in one batched product; across blocks a ``[dim_k, dim_v]`` state per head carries the past, so the
cost is O(T B d + T d^2) rather than O(T^2 d) and only the short block loop runs in Python.
Everything is accumulated in float32 (float64 for float64 inputs) and plain autograd gives the
backward pass, including through ``initial_state``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from openm1.ops.lightning._checks import (
    accum_dtype,
    check_block_size,
    check_cu_seqlens,
    check_qkv,
    check_state,
)


class BlockDecay(NamedTuple):
    """Decay tables for one block size; every shorter block's tables are slices of these."""

    query: Tensor  # [H, B, 1]  exp(-s (i + 1)): how much of the carried state position i sees
    key: Tensor  # [H, B, 1]   exp(-s (B - 1 - j)): how much of token j survives to the block end
    intra: Tensor  # [H, B, B] exp(-s (i - j)) for j <= i, else 0


def block_decay(slopes: Tensor, block_size: int, dtype: torch.dtype) -> BlockDecay:
    s = slopes.to(dtype)[:, None]  # [H, 1]
    pos = torch.arange(block_size, device=slopes.device, dtype=dtype)
    query = torch.exp(-s * (pos + 1))
    key = torch.exp(-s * (block_size - 1 - pos))
    diff = pos[:, None] - pos[None, :]
    intra = torch.exp(-s[:, :, None] * diff.clamp(min=0)).masked_fill(diff < 0, 0.0)
    return BlockDecay(query[..., None], key[..., None], intra)


def _chunk_forward(
    q: Tensor, k: Tensor, v: Tensor, decay: BlockDecay, state: Tensor | None, need_state: bool
) -> tuple[Tensor, Tensor | None]:
    """One batch of equal-length sequences, heads-first: q, k [B, H, T, Dk], v [B, H, T, Dv].

    ``state`` [B, H, Dk, Dv] (None means zeros, which skips the first inter-block product). Returns
    the output [B, H, T, Dv] and, if ``need_state``, the final state (None if it would be all zeros).
    """
    batch, heads, length, dim_k = q.shape
    dim_v = v.shape[-1]
    if length == 0:
        return v.new_zeros(batch, heads, 0, dim_v), state if need_state else None
    full = decay.intra.shape[-1]
    bs = min(full, length)  # never pay for a block longer than the sequence
    nb = -(-length // bs)
    tail = length - (nb - 1) * bs  # length of the last block, 1..bs
    if tail != bs:  # zero padding after the end: the causal mask keeps it away from real outputs
        pad = (0, 0, 0, bs - tail)
        q, k, v = F.pad(q, pad), F.pad(k, pad), F.pad(v, pad)
    qb = q.reshape(batch, heads, nb, bs, dim_k)
    kb = k.reshape(batch, heads, nb, bs, dim_k)
    vb = v.reshape(batch, heads, nb, bs, dim_v)

    intra = ((qb @ kb.transpose(-1, -2)) * decay.intra[:, None, :bs, :bs]) @ vb  # [B, H, nb, bs, Dv]
    q_dec = qb * decay.query[:, None, :bs]  # decayed queries for the inter-block term, all blocks at once
    k_dec = kb * decay.key[:, None, full - bs :]  # exact for full blocks; the tail block is redone below

    outs = []
    for n in range(nb):
        o_n = intra[:, :, n]
        if state is not None:
            o_n = o_n + q_dec[:, :, n] @ state
        outs.append(o_n)
        if n == nb - 1 and not need_state:
            break
        if n < nb - 1 or tail == bs:
            kv = k_dec[:, :, n].transpose(-1, -2) @ vb[:, :, n]
            carry = decay.query[:, bs - 1 : bs]  # exp(-s bs), [H, 1, 1]
        else:  # partial last block of length `tail`: decay to its own end, not the padded one
            kv = (kb[:, :, n, :tail] * decay.key[:, full - tail :]).transpose(-1, -2) @ vb[:, :, n, :tail]
            carry = decay.query[:, tail - 1 : tail]
        state = kv if state is None else state * carry + kv
    o = torch.stack(outs, dim=2).reshape(batch, heads, nb * bs, dim_v)
    return o[:, :, :length], state if need_state else None


def lightning_attn_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    slopes: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    block_size: int = 64,
) -> tuple[Tensor, Tensor | None]:
    """Causal decayed linear attention, block by block.

    q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]``, slopes ``[H]``; ``initial_state`` ``[N, H, Dk, Dv]``
    with N = B, or the number of packed sequences when ``cu_seqlens`` ``[N + 1]`` is given (then B
    must be 1). Returns ``(o [B, T, H, Dv] in q's dtype, final_state or None)``; the final state is
    float32 (float64 for float64 inputs).

    Packed sequences are run one after another through the batched path rather than padded into a
    batch: padding would either waste compute on skewed lengths or need a per-token decay mask (the
    state must stop decaying after each sequence ends), while on the CPU the heads already give each
    batched product enough work. The cost is O(N + T / block_size) small Python iterations.
    """
    fn = "lightning_attn"
    dims = check_qkv(q, k, v, slopes, fn=fn)
    check_block_size(block_size, fn=fn)
    offsets = check_cu_seqlens(cu_seqlens, dims.batch, dims.length, fn=fn) if cu_seqlens is not None else None
    n_seq = len(offsets) - 1 if offsets is not None else dims.batch
    state_shape = (n_seq, dims.heads, dims.dim_k, dims.dim_v)
    if initial_state is not None:
        check_state(initial_state, state_shape, q.device, "initial_state", fn=fn)

    acc = accum_dtype(q.dtype)
    qh, kh, vh = (x.transpose(1, 2).to(acc) for x in (q, k, v))  # [B, H, T, D]
    s0 = initial_state.to(acc) if initial_state is not None else None

    if offsets is None:
        decay = block_decay(slopes, max(1, min(block_size, dims.length)), acc)
        o, final = _chunk_forward(qh, kh, vh, decay, s0, output_final_state)
        finals = [final]
    else:
        longest = max(b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True))
        decay = block_decay(slopes, max(1, min(block_size, longest)), acc)
        pieces, finals = [], []
        for n, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
            row = s0[n : n + 1] if s0 is not None else None
            o_n, final = _chunk_forward(
                qh[:, :, a:b], kh[:, :, a:b], vh[:, :, a:b], decay, row, output_final_state
            )
            pieces.append(o_n)
            finals.append(final)
        o = torch.cat(pieces, dim=2)

    o = o.transpose(1, 2).to(q.dtype).contiguous()
    if not output_final_state:
        return o, None
    if offsets is None:
        return o, finals[0] if finals[0] is not None else qh.new_zeros(state_shape)
    zero_row = qh.new_zeros((1, *state_shape[1:]))  # an empty sequence with no initial state
    return o, torch.cat([f if f is not None else zero_row for f in finals], dim=0)
