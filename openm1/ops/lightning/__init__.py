"""Lightning attention: causal linear attention with a per-head exponential decay.

``lightning_attn`` is the entry point the model calls; it picks a backend so that a fused Triton
kernel can replace the PyTorch path without touching callers.
"""

from __future__ import annotations

import os

from torch import Tensor

from openm1.ops.lightning.chunk import lightning_attn_chunked
from openm1.ops.lightning.naive import lightning_attn_quadratic, lightning_attn_recurrent
from openm1.ops.lightning.recurrent import lightning_attn_step
from openm1.ops.lightning.slopes import lightning_decay_slopes

__all__ = [
    "BACKEND_ENV",
    "lightning_attn",
    "lightning_attn_chunked",
    "lightning_attn_quadratic",
    "lightning_attn_recurrent",
    "lightning_attn_step",
    "lightning_decay_slopes",
    "resolve_backend",
]

BACKEND_ENV = "OPENM1_LIGHTNING_BACKEND"
_BACKENDS = ("auto", "torch", "triton")


def resolve_backend() -> str:
    """The backend named by ``$OPENM1_LIGHTNING_BACKEND`` (read per call so tests can switch it)."""
    name = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if name not in _BACKENDS:
        raise ValueError(
            f"{BACKEND_ENV}={name!r} is not a lightning-attention backend; use one of {_BACKENDS}"
        )
    if name == "triton":
        # Hook: import and return the Triton kernel module here once openm1/ops/lightning/triton exists,
        # and let "auto" choose it for CUDA inputs.
        raise NotImplementedError(
            f"{BACKEND_ENV}=triton: the Triton lightning-attention backend is not implemented yet; "
            f"unset {BACKEND_ENV} or set it to 'torch' to use the PyTorch path"
        )
    return "torch"  # "auto" resolves to torch until a Triton backend exists


def lightning_attn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    slopes: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Causal lightning attention over whole sequences; see ``lightning_attn_chunked`` for the contract.

    q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]``, slopes ``[H]``, ``initial_state`` ``[N, H, Dk, Dv]``,
    ``cu_seqlens`` ``[N + 1]`` (with B == 1). Returns ``(o, final_state)``; ``final_state`` is None
    unless ``output_final_state``.
    """
    resolve_backend()  # only the PyTorch backend exists today
    return lightning_attn_chunked(
        q,
        k,
        v,
        slopes,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
    )
