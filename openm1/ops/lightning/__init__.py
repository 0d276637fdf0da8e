"""Lightning attention: causal linear attention with a per-head exponential decay.

``lightning_attn`` is the entry point the model calls; it picks a backend so that a fused Triton
kernel can replace the PyTorch path without touching callers.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from openm1.ops.lightning.chunk import lightning_attn_chunked
from openm1.ops.lightning.naive import lightning_attn_quadratic, lightning_attn_recurrent
from openm1.ops.lightning.recurrent import lightning_attn_step as lightning_attn_step_torch
from openm1.ops.lightning.slopes import lightning_decay_slopes

__all__ = [
    "BACKEND_ENV",
    "lightning_attn",
    "lightning_attn_chunked",
    "lightning_attn_quadratic",
    "lightning_attn_recurrent",
    "lightning_attn_step",
    "lightning_attn_step_torch",
    "lightning_decay_slopes",
    "resolve_backend",
]

BACKEND_ENV = "OPENM1_LIGHTNING_BACKEND"
_BACKENDS = ("auto", "torch", "triton")


def resolve_backend(device: torch.device | None = None) -> str:
    """The backend for inputs on ``device``: ``$OPENM1_LIGHTNING_BACKEND`` if set to ``torch`` or
    ``triton``, else (``auto``) Triton on CUDA when it is installed and the PyTorch path otherwise."""
    name = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if name not in _BACKENDS:
        raise ValueError(
            f"{BACKEND_ENV}={name!r} is not a lightning-attention backend; use one of {_BACKENDS}"
        )
    if name == "auto":
        return "triton" if device is not None and device.type == "cuda" and _triton_available() else "torch"
    if name == "triton" and not _triton_available():
        raise ValueError(f"{BACKEND_ENV}=triton but triton is not installed: pip install triton")
    return name


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


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
    unless ``output_final_state``. Runs the Triton kernels on CUDA, the chunked PyTorch path elsewhere.
    """
    args = (q, k, v, slopes, initial_state, output_final_state, cu_seqlens)
    if resolve_backend(q.device) == "triton":
        from openm1.ops.lightning.triton import lightning_attn_triton

        return lightning_attn_triton(*args)
    return lightning_attn_chunked(*args)


def lightning_attn_step(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, state: Tensor) -> Tensor:
    """One decoding step for N sequences (``[N, H, D]`` or ``[N, 1, H, D]``); ``state`` updated in place."""
    if resolve_backend(q.device) == "triton" and state.dtype == torch.float32 and state.is_contiguous():
        from openm1.ops.lightning.triton import lightning_attn_step_triton

        return lightning_attn_step_triton(q, k, v, slopes, state)
    return lightning_attn_step_torch(q, k, v, slopes, state)
