"""Scale-out with PyTorch's own engine: device meshes from torchrun, FSDP2, expert parallelism, DCP.

Model code stays single-device; :func:`parallelize` applies parallelism from outside (torchtitan's
shape). A trainer calls, in order::

    env = init_distributed()                      # reads torchrun's RANK / WORLD_SIZE, sets timeouts
    meshes = build_mesh(env.world_size, config.num_local_experts, ep=2)   # checked on every rank
    parallelize(model, meshes)                    # EP over "ep", FSDP2 over the rest
    clip_grad_norm_(model, 1.0)                   # after backward, across meshes
    save_distributed(folder, model, optimizer)    # torch.distributed.checkpoint, atomic

The trainers (``openm1.train.Trainer``, ``openm1.rl.RLTrainer``) do this themselves under torchrun.
``docs/scale.md`` has the whole recipe and what each piece assumes.
"""

from openm1.distributed.checkpoint import (
    DistCheckpointError,
    dcp_to_transformers,
    load_distributed,
    load_full_pretrained,
    save_distributed,
    save_full_pretrained,
    transformers_to_dcp,
)
from openm1.distributed.env import (
    DistEnv,
    MeshError,
    Meshes,
    build_mesh,
    check_mesh,
    init_distributed,
    maybe_init_distributed,
)
from openm1.distributed.experts import ExpertParallelExperts, shard_experts
from openm1.distributed.fsdp import init_sharded_weights, is_parallelized, materialize, parallelize
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
    "is_parallelized",
    "load_distributed",
    "load_full_pretrained",
    "materialize",
    "maybe_init_distributed",
    "parallelize",
    "save_distributed",
    "save_full_pretrained",
    "shard_experts",
    "transformers_to_dcp",
]
