"""FSDP2 (``fully_shard``) for :class:`~openm1.model.model.MiniMaxM1ForCausalLM`, composed with expert
parallelism, applied from outside the model.

Units: each decoder block, the embedding, the LM head, and the root (final norm, anything left). Each
unit is all-gathered just before it runs and freed after, so a GPU holds one or two blocks unsharded.
With ``ep > 1`` each block's experts are a unit of their own, FSDP-sharded over ``dp`` only (the ``ep``
dimension already split them); everything else is sharded over all ranks (``dp_ep``).

Gradients: every rank computes the mean loss of its own micro-batch. FSDP averages dense gradients over
all ranks, which is the gradient of the global mean. An expert's gradient already sums the
contributions of all ``ep`` ranks' tokens (they arrived by all-to-all), so its reduction over ``dp`` is
divided by ``dp x ep`` instead of ``dp``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from openm1.distributed.env import Meshes
from openm1.distributed.experts import ExpertParallelExperts, shard_experts


def default_mixed_precision(device_type: str) -> MixedPrecisionPolicy:
    """bf16 compute with float32 gradient reduction on GPUs; full float32 on CPUs (gloo tests)."""
    if device_type == "cuda":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def parallelize(
    model: nn.Module,
    mesh: Meshes,
    mp_policy: MixedPrecisionPolicy | None = None,
    reshard_after_forward: bool = True,
    activation_checkpointing: bool = False,
) -> nn.Module:
    """Shard ``model`` in place over ``mesh`` (from :func:`~openm1.distributed.env.build_mesh`).

    Every rank must hold the same full weights first (same seed, or the same checkpoint loaded): FSDP2
    and the expert split keep each rank's slice of what is there. ``mp_policy`` defaults to
    :func:`default_mixed_precision`; the LM head keeps float32 parameters when the config asks for a
    float32 head (the paper's fix for train/rollout probability mismatch). Returns ``model``.
    """
    if not isinstance(mesh, Meshes):
        raise TypeError("parallelize needs the Meshes that openm1.distributed.build_mesh returns")
    mp = mp_policy or default_mixed_precision(mesh.device_type)
    dense_mesh, ep = mesh.dp_ep, mesh.ep.size()
    world = dense_mesh.size()
    decoder = model.model
    if ep > 1:
        shard_experts(model, mesh.ep)
    for layer in decoder.layers:
        if activation_checkpointing:
            from torch.distributed._composable import checkpoint

            checkpoint(layer)  # recompute the block in backward; parameter names unchanged
        if ep > 1:
            experts = layer.mlp.experts
            assert isinstance(experts, ExpertParallelExperts)
            fully_shard(experts, mesh=mesh.dp, mp_policy=mp, reshard_after_forward=reshard_after_forward)
            experts.set_gradient_divide_factor(float(world))
            if mesh.device_type != "cuda" and mesh.dp.size() > 1:
                # gloo has no PREMUL_SUM: sum, then divide. Not with dp = 1: torch 2.13 would then
                # divide twice (once in its single-rank copy, once after the non-existent reduction).
                experts.set_force_sum_reduction_for_comms(True)
        fully_shard(layer, mesh=dense_mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    config = model.config
    if not config.tie_word_embeddings:
        fully_shard(
            decoder.embed_tokens, mesh=dense_mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward
        )
        head_mp = mp
        if config.lm_head_fp32 and mp.param_dtype is not None:
            head_mp = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
        fully_shard(model.lm_head, mesh=dense_mesh, mp_policy=head_mp, reshard_after_forward=False)
    fully_shard(model, mesh=dense_mesh, mp_policy=mp, reshard_after_forward=False)
    return model


def is_parallelized(model: nn.Module) -> bool:
    """Whether :func:`parallelize` (or any ``fully_shard``) was already applied to ``model``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def materialize(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Allocate a model built on the meta device and parallelized (each rank holds only its shards),
    and recompute its derived buffers. Then fill the weights: :func:`load_distributed` (resume) or
    :func:`init_sharded_weights` (fresh). This is how a model larger than one host is built."""
    model.to_empty(device=device)
    model.init_derived_buffers()
    return model


@torch.no_grad()
def init_sharded_weights(model: nn.Module) -> nn.Module:
    """Fresh weights for a parallelized model: the model's own init, and the same normal init for the
    expert-parallel experts. Sharded random draws differ from a single-process init with the same seed."""
    model.reset_parameters()
    std = model.config.initializer_range
    for module in model.modules():
        if isinstance(module, ExpertParallelExperts):
            module.gate_up_proj.normal_(0.0, std)
            module.down_proj.normal_(0.0, std)
    return model
