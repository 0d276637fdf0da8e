"""Slow, obviously-correct lightning attention forms, used as test oracles.

Both compute ``o_i = sum_{j<=i} exp(-s (i - j)) (q_i . k_j) v_j + exp(-s (i + 1)) q_i S_init`` per
head, with ``S_init`` the state before token 0; they share no code with the chunked path on purpose.
"""

from __future__ import annotations

import torch
from torch import Tensor

from openm1.ops.lightning._checks import accum_dtype, check_qkv, check_state


def _checked(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, initial_state: Tensor | None, fn: str):
    dims = check_qkv(q, k, v, slopes, fn=fn)
    if initial_state is not None:
        check_state(
            initial_state, (dims.batch, dims.heads, dims.dim_k, dims.dim_v), q.device, "initial_state", fn
        )
    return dims


def lightning_attn_quadratic(
    q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Masked decay-matrix form, O(T^2): ``((Q K^T) * M) V`` with ``M_ij = exp(-s (i - j))``, j <= i.

    Returns ``(o [B, T, H, Dv] in q's dtype, final_state [B, H, Dk, Dv] float32/float64)``.
    """
    dims = _checked(q, k, v, slopes, initial_state, "lightning_attn_quadratic")
    acc = accum_dtype(q.dtype)
    qh, kh, vh = (x.transpose(1, 2).to(acc) for x in (q, k, v))  # [B, H, T, D]
    s = slopes.to(acc)[:, None, None]  # [H, 1, 1]
    pos = torch.arange(dims.length, device=q.device, dtype=acc)
    diff = pos[:, None] - pos[None, :]
    mask = torch.exp(-s * diff.clamp(min=0)).masked_fill(diff < 0, 0.0)  # [H, T, T]
    o = ((qh @ kh.transpose(-1, -2)) * mask) @ vh
    key_decay = torch.exp(-s * (dims.length - 1 - pos)[:, None])  # [H, T, 1]
    state = (kh * key_decay).transpose(-1, -2) @ vh
    if initial_state is not None:
        s0 = initial_state.to(acc)
        o = o + (qh * torch.exp(-s * (pos + 1)[:, None])) @ s0
        state = state + torch.exp(-s * dims.length) * s0
    return o.transpose(1, 2).to(q.dtype), state


def lightning_attn_recurrent(
    q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Token-by-token recurrence ``S_t = exp(-s) S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t`` in float64.

    The definition itself, so it is the reference the other forms are tested against. Differentiable.
    Returns ``(o [B, T, H, Dv] in q's dtype, final_state [B, H, Dk, Dv] float32/float64)``.
    """
    dims = _checked(q, k, v, slopes, initial_state, "lightning_attn_recurrent")
    f64 = torch.float64
    shape = (dims.batch, dims.heads, dims.dim_k, dims.dim_v)
    state = initial_state.to(f64) if initial_state is not None else q.new_zeros(shape, dtype=f64)
    decay = torch.exp(-slopes.to(f64))[:, None, None]
    qd, kd, vd = q.to(f64), k.to(f64), v.to(f64)
    outs = []
    for t in range(dims.length):
        state = decay * state + kd[:, t, :, :, None] * vd[:, t, :, None, :]
        outs.append((qd[:, t, :, None, :] @ state).squeeze(-2))  # [B, H, Dv]
    if outs:
        o = torch.stack(outs, dim=1)
    else:
        o = q.new_zeros((dims.batch, 0, dims.heads, dims.dim_v), dtype=f64)
    return o.to(q.dtype), state.to(accum_dtype(q.dtype))
