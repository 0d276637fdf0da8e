"""Expert parallelism: each rank of the ``ep`` mesh dimension holds ``E / ep`` experts, and tokens travel
to their experts and back with two ``all_to_all_single`` exchanges per MoE layer.

The expert weights become DTensors sharded on dim 0 over the ``ep`` mesh, so their names and logical
shapes (``mlp.experts.gate_up_proj [E, 2I, hidden]``) are those of the single-device model: distributed
checkpoints reshard them to any other layout, and FSDP2 can shard them further over ``dp``.

The router is untouched (:class:`~openm1.model.moe.SparseMoE` calls ``self.experts(x, top_w, top_i)``),
so this module replaces ``mlp.experts`` and the model code stays single-device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard

from openm1.model.moe import Experts


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with uneven splits; its gradient is the same exchange in reverse."""

    @staticmethod
    def forward(ctx, x, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:  # noqa: ANN001
        ctx.group, ctx.out_splits, ctx.in_splits = group, out_splits, in_splits
        out = x.new_empty((sum(out_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN205
        out = grad.new_empty((sum(ctx.in_splits), *grad.shape[1:]))
        dist.all_to_all_single(out, grad.contiguous(), ctx.in_splits, ctx.out_splits, group=ctx.group)
        return out, None, None, None


def all_to_all(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:  # noqa: ANN001
    """Differentiable uneven all-to-all of the rows of ``x``."""
    return _AllToAll.apply(x, out_splits, in_splits, group)


class ExpertParallelExperts(nn.Module):
    """Drop-in for :class:`~openm1.model.moe.Experts` whose experts are spread over an ``ep`` mesh."""

    def __init__(self, gate_up_proj: DTensor, down_proj: DTensor, ep_mesh: DeviceMesh) -> None:
        super().__init__()
        self.ep_mesh = ep_mesh
        self.ep = ep_mesh.size()
        self.num_experts = gate_up_proj.shape[0]
        self.num_local = self.num_experts // self.ep
        self.gate_up_proj = nn.Parameter(gate_up_proj)
        self.down_proj = nn.Parameter(down_proj)

    @classmethod
    def from_experts(cls, experts: Experts, ep_mesh: DeviceMesh) -> ExpertParallelExperts:
        """Keep this rank's slice of ``experts`` (every rank must hold the same full weights)."""
        ep, e = ep_mesh.size(), experts.num_experts
        if e % ep:
            raise ValueError(f"ep={ep} does not divide the {e} experts; choose a divisor of {e}")
        me = ep_mesh.get_local_rank()

        def shard(p: nn.Parameter) -> DTensor:
            local = p.detach().chunk(ep, dim=0)[me].clone()
            return DTensor.from_local(local, ep_mesh, [Shard(0)], run_check=False)

        return cls(shard(experts.gate_up_proj), shard(experts.down_proj), ep_mesh)

    def _local(self, p: torch.Tensor) -> torch.Tensor:
        return p.to_local() if isinstance(p, DTensor) else p

    def forward(self, x: torch.Tensor, top_w: torch.Tensor, top_i: torch.Tensor) -> torch.Tensor:
        """``x [tokens, hidden]``; the weighted sum of each token's top-k expert outputs, as
        :meth:`Experts.forward` computes it, with the experts' matmuls on the ranks that own them."""
        group, ep, n_local = self.ep_mesh.get_group(), self.ep, self.num_local
        top_k = top_i.shape[1]
        flat = top_i.reshape(-1)
        order = torch.argsort(flat, stable=True)  # grouped by expert, hence by owning rank
        token_of = order // top_k
        counts = torch.bincount(flat, minlength=self.num_experts)
        # 1. how many rows each rank will send to each of my local experts
        recv_counts = torch.empty_like(counts)
        dist.all_to_all_single(recv_counts, counts, group=group)
        recv = recv_counts.view(ep, n_local)
        send_splits = counts.view(ep, n_local).sum(1).tolist()
        recv_splits = recv.sum(1).tolist()
        # 2. dispatch: rows arrive grouped by source rank, then by local expert
        rows = all_to_all(x[token_of], recv_splits, send_splits, group)
        local_expert = torch.repeat_interleave(
            torch.arange(n_local, device=x.device).repeat(ep), recv.reshape(-1)
        )
        by_expert = torch.argsort(local_expert, stable=True)
        rows = rows[by_expert]
        gate_up, down = self._local(self.gate_up_proj), self._local(self.down_proj)
        outs, start = [], 0
        for j, count in enumerate(recv.sum(0).tolist()):
            if count:
                g, u = F.linear(rows[start : start + count], gate_up[j]).chunk(2, dim=-1)
                outs.append(F.linear(F.silu(g) * u, down[j]))
                start += count
        if outs:
            y = torch.cat(outs)
        else:  # keep the weights in the graph so every rank reduces the same gradients
            y = x.new_zeros((0, x.shape[1])) + 0 * (gate_up.sum() + down.sum())
        # 3. combine: undo the local sort, send rows home, weight and sum per token
        y = y[torch.argsort(by_expert)]
        y = all_to_all(y, send_splits, recv_splits, group)
        weights = top_w.reshape(-1)[order].to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token_of, y * weights[:, None])


def shard_experts(model: nn.Module, ep_mesh: DeviceMesh) -> int:
    """Replace every :class:`Experts` of ``model`` by its expert-parallel slice; return how many."""
    targets = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, Experts)
    ]
    for parent, name in targets:
        setattr(parent, name, ExpertParallelExperts.from_experts(getattr(parent, name), ep_mesh))
    return len(targets)
