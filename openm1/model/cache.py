"""A simple growing cache for incremental decoding with the reference model.

Softmax layers keep keys and values (grown by concatenation); lightning layers keep one float32 state
``[batch, heads, head_dim, head_dim]`` whatever the length. The generation engine brings a preallocated
cache with the same methods; the model only uses the methods below.
"""

from __future__ import annotations

import torch


class HybridCache:
    """Per-layer decoding state: KV for softmax layers, the recurrent state for lightning layers."""

    def __init__(self) -> None:
        self.key_values: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.states: dict[int, torch.Tensor] = {}
        self.seen_tokens = 0

    def get_state(self, layer_idx: int) -> torch.Tensor | None:
        return self.states.get(layer_idx)

    def set_state(self, layer_idx: int, state: torch.Tensor) -> None:
        self.states[layer_idx] = state

    def update_kv(
        self, layer_idx: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``[batch, time, kv_heads, dim]`` keys/values; return all of them so far."""
        if layer_idx in self.key_values:
            past_k, past_v = self.key_values[layer_idx]
            key, value = torch.cat((past_k, key), dim=1), torch.cat((past_v, value), dim=1)
        self.key_values[layer_idx] = (key, value)
        return key, value

    def advance(self, num_tokens: int) -> None:
        """Called by the model once per forward, after every layer has stored its part."""
        self.seen_tokens += num_tokens

    def get_seq_length(self) -> int:
        return self.seen_tokens

    def memory_bytes(self) -> int:
        kv = sum(k.numel() * k.element_size() * 2 for k, _ in self.key_values.values())
        return kv + sum(s.numel() * s.element_size() for s in self.states.values())
