"""Per-head decay rates of the released MiniMax lightning-attention layers."""

from __future__ import annotations

import torch
from torch import Tensor


def lightning_decay_slopes(num_heads: int, layer_idx: int, num_layers: int) -> Tensor:
    """Decay rate per head: ``(2 ** (-8 / H)) ** (h + 1) * (1 - layer_idx / (L - 1 + 1e-5) + 1e-5)``.

    ALiBi-style geometric rates (fast-forgetting heads first) scaled down linearly with depth, so
    deep layers remember longer. The arithmetic mirrors transformers'
    ``MiniMaxLightningAttention.get_slope_rate`` op for op in float32 so checkpoints reproduce
    bit-exactly. ``layer_idx``/``num_layers`` count all decoder layers, softmax ones included.
    Returns float32 ``[num_heads]`` on the CPU.
    """
    if num_heads < 1:
        raise ValueError(f"lightning_decay_slopes: num_heads must be >= 1, found {num_heads}")
    if num_layers < 1 or not 0 <= layer_idx < num_layers:
        raise ValueError(
            f"lightning_decay_slopes: need 0 <= layer_idx < num_layers, found layer_idx={layer_idx}, "
            f"num_layers={num_layers}"
        )
    base = 1 / (2 ** (8 / num_heads))
    exponent = torch.arange(num_heads, dtype=torch.int64) + 1
    factor = 1 - layer_idx / (num_layers - 1 + 1e-5) + 1e-5
    return (base**exponent).to(torch.float32) * factor
