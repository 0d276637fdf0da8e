"""Sequence-mixing kernels of openm1 (pure-PyTorch references; fused backends plug in behind them)."""

from __future__ import annotations

from openm1.ops.lightning import lightning_attn, lightning_attn_step, lightning_decay_slopes

__all__ = ["lightning_attn", "lightning_attn_step", "lightning_decay_slopes"]
