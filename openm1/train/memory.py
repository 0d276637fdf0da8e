"""Activation checkpointing: recompute each decoder layer in the backward pass instead of keeping its
activations, trading about one extra forward for memory that no longer grows with depth."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def enable_activation_checkpointing(model: torch.nn.Module) -> int:
    """Wrap every decoder layer's forward of an openm1 model in ``torch.utils.checkpoint`` (applied from
    outside, so the model code stays as it is). Returns the number of layers wrapped."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError("activation checkpointing expects an openm1 model with model.layers")
    for layer in layers:
        if getattr(layer, "_openm1_checkpointed", False):
            continue
        inner = layer.forward

        def forward(x, ctx, _inner=inner):  # noqa: ANN001, ANN202 - DecoderLayer's signature
            if not torch.is_grad_enabled():
                return _inner(x, ctx)
            return checkpoint(_inner, x, ctx, use_reentrant=False)

        layer.forward = forward
        layer._openm1_checkpointed = True
    return len(layers)
