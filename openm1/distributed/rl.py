"""What RL needs across ranks: group advantages over the whole rollout batch, the global token count
for CISPO's ``1 / sum_i |o_i|``, and the full weights for every rank's rollout engine.

Each rank generates its share of the rollouts, in the order of the global batch (rank r holds rows
``[r n, (r + 1) n)``). A group of G completions may straddle ranks; its advantages must still use the
mean and std of all G rewards, so the rewards are gathered (a few numbers per rank) and every rank
computes the same advantages and keeps its own rows.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from openm1.rl.advantages import group_advantages


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's ``local`` rows concatenated in rank order, and where this rank's rows start.

    Ranks may hold different numbers of rows (sizes are exchanged first).
    """
    rank, world = _world()
    if world == 1:
        return local, 0
    n = torch.tensor([local.shape[0]], device=local.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    width = max(counts)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]), sum(counts[:rank])


def group_advantages_across_ranks(
    local_rewards: torch.Tensor, group_size: int, normalize_std: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """This rank's rows of :func:`~openm1.rl.advantages.group_advantages` over the global batch."""
    if local_rewards.dim() != 1:
        raise ValueError(
            f"local_rewards must be 1-D (one reward per rollout), got {tuple(local_rewards.shape)}"
        )
    every, start = gather_rows(local_rewards.float())
    if every.numel() % group_size:
        raise ValueError(
            f"the ranks hold {every.numel()} rollouts in all, not a multiple of group_size {group_size}: "
            "every prompt needs all of its completions somewhere"
        )
    adv = group_advantages(every, group_size, normalize_std=normalize_std, eps=eps)
    return adv[start : start + local_rewards.shape[0]]


def global_token_count(mask: torch.Tensor) -> torch.Tensor:
    """Tokens under ``mask`` summed over all ranks (float): the denominator of a token-level mean that
    matches the single-process loss. Scale each rank's summed loss by ``world / count`` before backward,
    since FSDP averages gradients over ranks."""
    total = mask.sum().float()
    if _world()[1] > 1:
        dist.all_reduce(total)
    return total


def full_state_for_rollout(model: nn.Module, to_cpu: bool = False) -> dict[str, torch.Tensor]:
    """The unsharded weights on every rank (one all-gather per tensor), for the rollout engine to load
    after an update. Call on all ranks. Holds the whole model once per rank: for the 456B model use a
    rollout engine sharded the same way, or stream layer by layer."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=False)
    state = get_model_state_dict(model, options=opts)
    return {k: (v.cpu() if to_cpu else v) for k, v in state.items()}
