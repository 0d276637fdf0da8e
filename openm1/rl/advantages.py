"""Group-relative advantages, DAPO's dynamic sampling and overlong reward shaping.

Rewards arrive flat, ``[num_groups * group_size]``, with the G samples of one prompt contiguous (the
order a rollout produces them), or already shaped ``[num_groups, group_size]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.dim() == 2:
        if rewards.shape[1] != group_size:
            raise ValueError(f"rewards has groups of {rewards.shape[1]}, but group_size is {group_size}")
        return rewards
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}: pass a flat "
            "tensor whose length is a multiple of group_size, or [num_groups, group_size]"
        )
    return rewards.view(-1, group_size)


def group_advantages(
    rewards: Tensor, group_size: int, normalize_std: bool = True, eps: float = 1e-4
) -> Tensor:
    """``A_i = (R_i - mean(R)) / (std(R) + eps)`` within each group (GRPO; the paper's CISPO), or only
    ``R_i - mean(R)`` with ``normalize_std=False`` (Dr. GRPO). Returns the rewards' shape.

    The std is the sample std (Bessel-corrected), as TRL computes it; a group whose rewards are all
    equal gets advantage 0 either way, which is why dynamic sampling drops such groups.
    """
    g = _grouped(rewards.float(), group_size)
    adv = g - g.mean(dim=1, keepdim=True)
    if normalize_std:
        if group_size < 2:
            raise ValueError("std normalisation needs group_size >= 2; use normalize_std=False for G = 1")
        adv = adv / (g.std(dim=1, keepdim=True) + eps)
    return adv.reshape(rewards.shape)


def per_token(advantages: Tensor, mask: Tensor) -> Tensor:
    """Broadcast per-sequence advantages ``[batch]`` to ``[batch, time]``, zero outside the mask."""
    if advantages.dim() != 1 or mask.dim() != 2 or mask.shape[0] != advantages.shape[0]:
        raise ValueError(
            f"expected advantages [batch] and mask [batch, time], got {tuple(advantages.shape)} and "
            f"{tuple(mask.shape)}"
        )
    return advantages[:, None] * mask.to(advantages.dtype)


@dataclass
class GroupFilter:
    """Which groups carry a learning signal (DAPO's dynamic sampling)."""

    keep_groups: Tensor
    """``[num_groups]`` bool: True where the group's rewards are not all equal."""
    keep_samples: Tensor
    """``[num_groups * group_size]`` bool: the same, per sample (index rollouts with it)."""
    dropped: int
    """How many groups were dropped (report it: a rising count means the task is solved or hopeless)."""
    num_groups: int


def dynamic_sampling(rewards: Tensor, group_size: int, tol: float = 0.0) -> GroupFilter:
    """Drop groups whose rewards are all equal (within ``tol``): their group-relative advantages are 0,
    so they add nothing but dilute the token-level average. DAPO refills the batch by sampling more
    prompts; that loop belongs to the rollout, which uses :attr:`GroupFilter.dropped` to decide."""
    g = _grouped(rewards.float(), group_size)
    keep = (g.max(dim=1).values - g.min(dim=1).values) > tol
    return GroupFilter(
        keep_groups=keep,
        keep_samples=keep.repeat_interleave(group_size),
        dropped=int((~keep).sum()),
        num_groups=g.shape[0],
    )


def overlong_penalty(lengths: Tensor, max_len: int, cache_len: int) -> Tensor:
    """DAPO's soft overlong punishment: 0 up to ``max_len - cache_len`` tokens, then falling linearly to
    -1 at ``max_len``, and -1 beyond (a truncated response). Added to the task reward."""
    if cache_len < 0 or cache_len > max_len:
        raise ValueError(f"cache_len must be in [0, max_len={max_len}], got {cache_len}")
    lengths = lengths.float()
    start = max_len - cache_len
    if cache_len == 0:
        return torch.where(lengths > max_len, -1.0, 0.0)
    soft = (start - lengths) / cache_len
    return torch.where(
        lengths <= start, torch.zeros_like(lengths), torch.where(lengths <= max_len, soft, -1.0)
    )


def shape_overlong(rewards: Tensor, lengths: Tensor, max_len: int, cache_len: int) -> Tensor:
    """``rewards + overlong_penalty(lengths)``."""
    if rewards.shape != lengths.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and lengths {tuple(lengths.shape)} must match")
    return rewards.float() + overlong_penalty(lengths, max_len, cache_len)
