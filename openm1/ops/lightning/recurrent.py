"""Single-token lightning attention for decoding: O(1) in the context length.

Decoding advances every sequence's ``[dim_k, dim_v]`` state by one token, so the state is updated
in place (no per-step allocation of a state-sized tensor; a cache can hand in its own buffer).
"""

from __future__ import annotations

import torch
from torch import Tensor

from openm1.ops.lightning._checks import check_qkv, check_state


def lightning_attn_step(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, state: Tensor) -> Tensor:
    """One step ``S <- exp(-s) S + k^T v``, ``o = q S`` for N sequences at once.

    q, k ``[N, H, Dk]`` and v ``[N, H, Dv]`` (or each with a time axis of 1, ``[N, 1, H, D]``);
    ``state`` ``[N, H, Dk, Dv]`` float32 (float64 accepted) is updated IN PLACE. Returns ``o`` with
    q's rank, ``[N, H, Dv]`` or ``[N, 1, H, Dv]``, in q's dtype.
    """
    fn = "lightning_attn_step"
    if not isinstance(q, Tensor) or q.dim() not in (3, 4):
        found = tuple(q.shape) if isinstance(q, Tensor) else type(q).__name__
        raise ValueError(f"{fn}: q must be [N, heads, dim_k] or [N, 1, heads, dim_k], found {found}")
    timed = q.dim() == 4
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor) or x.dim() != q.dim() or (timed and x.shape[1] != 1):
            found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{fn}: q, k, v must all be [N, heads, dim] or all [N, 1, heads, dim] (one token per "
                f"sequence); found {name} with shape {found}. Use lightning_attn for several tokens"
            )
    if not timed:
        q, k, v = q[:, None], k[:, None], v[:, None]
    dims = check_qkv(q, k, v, slopes, fn=fn)
    check_state(state, (dims.batch, dims.heads, dims.dim_k, dims.dim_v), q.device, "state", fn=fn)
    if state.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"{fn}: state must be float32 (or float64) to accumulate exactly, found {state.dtype}"
        )

    sd = state.dtype
    qs, ks, vs = q[:, 0].to(sd), k[:, 0].to(sd), v[:, 0].to(sd)  # [N, H, D]
    decay = torch.exp(-slopes.to(sd))[:, None, None]  # [H, 1, 1]
    state.mul_(decay).addcmul_(ks[..., :, None], vs[..., None, :])
    o = (qs[..., None, :] @ state).squeeze(-2).to(q.dtype)  # [N, H, Dv]
    return o[:, None] if timed else o
