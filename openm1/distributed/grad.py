"""Gradient-norm clipping for models sharded by :func:`~openm1.distributed.fsdp.parallelize`.

``torch.nn.utils.clip_grad_norm_`` cannot mix DTensors of different meshes (dense parameters live on
``dp_ep``, experts on ``(dp, ep)``). Under ``parallelize`` every gradient element lives on exactly one
rank, so the global norm is the square root of the all-reduced sum of each rank's local squares.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor


def clip_grad_norm_(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Scale gradients so their global L2 norm is at most ``max_norm``; return the norm before clipping.

    Call on every rank. Sharded (DTensor) gradients are summed over ranks; plain ones are taken to be
    replicated and counted once. No host synchronisation, as in ``torch.nn.utils.clip_grad_norm_``.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    local = [g.to_local() if isinstance(g, DTensor) else g for g in grads]
    device = local[0].device
    squares = [t.detach().float().pow(2).sum() for t in local]
    zero = torch.zeros((), device=device)
    sharded = sum((sq for g, sq in zip(grads, squares, strict=True) if isinstance(g, DTensor)), zero)
    plain = sum((sq for g, sq in zip(grads, squares, strict=True) if not isinstance(g, DTensor)), zero)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sharded)
    norm = (sharded + plain).sqrt()
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for t in local:
        t.mul_(coef.to(t.dtype))
    return norm
