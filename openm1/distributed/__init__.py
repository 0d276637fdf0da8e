"""Scale-out with PyTorch's own engine: device meshes from torchrun, FSDP2, expert parallelism, DCP.

Model code stays single-device; :func:`parallelize` applies parallelism from outside (torchtitan's
shape). A trainer calls, in order::

    env = init_distributed()                      # reads torchrun's RANK / WORLD_SIZE, sets timeouts
    meshes = build_mesh(env.world_size, config.num_local_experts, ep=2)   # checked on every rank
    parallelize(model, meshes)                    # EP over "ep", FSDP2 over the rest
    clip_grad_norm_(model, 1.0)                   # after backward, across meshes
    save_distributed(folder, model, optimizer)    # torch.distributed.checkpoint, atomic

``docs/scale.md`` has the whole recipe and what each piece assumes.
"""

from openm1.distributed.checkpoint import (
    DistCheckpointError,
    dcp_to_transformers,
    load_distributed,
    save_distributed,
    transformers_to_dcp,
)
from openm1.distributed.env import DistEnv, MeshError, Meshes, build_mesh, check_mesh, init_distributed
from openm1.distributed.experts import ExpertParallelExperts, shard_experts
from openm1.distributed.fsdp import init_sharded_weights, materialize, parallelize
from openm1.distributed.grad import clip_grad_norm_
from openm1.distributed.rl import full_state_for_rollout, global_token_count, group_advantages_across_ranks

__all__ = [
    "DistCheckpointError",
    "DistEnv",
    "ExpertParallelExperts",
    "MeshError",
    "Meshes",
    "build_mesh",
    "check_mesh",
    "clip_grad_norm_",
    "dcp_to_transformers",
    "full_state_for_rollout",
    "global_token_count",
    "group_advantages_across_ranks",
    "init_distributed",
    "init_sharded_weights",
    "load_distributed",
    "materialize",
    "parallelize",
    "save_distributed",
    "shard_experts",
    "transformers_to_dcp",
]
