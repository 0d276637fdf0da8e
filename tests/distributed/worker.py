"""Run under ``torchrun --nproc-per-node 2``: FSDP2, expert parallelism and DCP on CPU over gloo.

``worker.py OUT main``: train 3 AdamW steps with FSDP2 (ep=1), with EP=2 + FSDP2 (with and without
activation checkpointing), record losses,
first-step logits and gradients, final weights, save a DCP checkpoint, exercise bad meshes and a failed
save. ``worker.py OUT hang``: rank 1 stops answering; rank 0 must get a timeout error, not hang.
``worker.py OUT dead``: rank 1 exits; torchrun (or the collective's error) must end the job.
Results go to ``OUT`` for the test (in its own process) to compare with the single-process run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from openm1.distributed import (
    DistCheckpointError,
    MeshError,
    build_mesh,
    init_distributed,
    init_sharded_weights,
    load_distributed,
    materialize,
    parallelize,
    save_distributed,
)
from openm1.distributed.grad import clip_grad_norm_
from openm1.distributed.rl import full_state_for_rollout, global_token_count, group_advantages_across_ranks
from openm1.model.model import MiniMaxM1ForCausalLM
from tests.distributed.common import (
    CLIP,
    RL_GROUP,
    batches,
    build_model,
    config,
    loss_fn,
    optimizer,
    rl_batch,
    shard,
)

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def train(ep: int, env, ac: bool = False) -> tuple:  # noqa: ANN001
    mesh = build_mesh(env.world_size, config().num_local_experts, ep=ep)
    model = parallelize(build_model(), mesh, activation_checkpointing=ac)
    opt = optimizer(model)
    losses, norms, first = [], [], {}
    for step, batch in enumerate(batches(env.world_size)):
        opt.zero_grad()
        loss, logits = loss_fn(model, shard(batch, env.rank, env.world_size))
        loss.backward()
        if step == 0:
            grads = {n: full(p.grad).detach().clone() for n, p in model.named_parameters()}
            every = [None] * env.world_size
            dist.all_gather_object(every, logits.detach())
            first = {"grads": grads, "logits": every}
        norms.append(float(clip_grad_norm_(model, CLIP)))
        opt.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / env.world_size)
    state = get_model_state_dict(model, options=FULL)
    local = [p.to_local() if isinstance(p, DTensor) else p for p in model.parameters()]
    moments = [
        t.to_local() if isinstance(t, DTensor) else t
        for st in opt.state.values()
        for k, t in st.items()
        if k in ("exp_avg", "exp_avg_sq")
    ]
    held = {
        "param_bytes": sum(t.numel() * t.element_size() for t in local),
        "optimizer_bytes": sum(t.numel() * t.element_size() for t in moments),
    }
    return {"losses": losses, "norms": norms, "state": state, "held": held, **first}, model, opt


def rl_across_ranks(env) -> dict:  # noqa: ANN001
    """Uneven shares of a global batch of rollouts: advantages and token counts of the whole batch."""
    rewards, mask, bounds = rl_batch(env.world_size)
    lo, hi = bounds[env.rank], bounds[env.rank + 1]
    return {
        "advantages": group_advantages_across_ranks(rewards[lo:hi], RL_GROUP),
        "tokens": global_token_count(mask[lo:hi]),
    }


def meta_resume(out: Path, trained, env) -> dict:  # noqa: ANN001
    """Build on the meta device, shard (EP=2 + FSDP2), allocate, resume from the checkpoint: the same
    logits as the trained model. And a fresh sharded init has the configured spread."""
    meshes = build_mesh(env.world_size, config().num_local_experts, ep=2)
    with torch.device("meta"):
        model = MiniMaxM1ForCausalLM(config())
    materialize(parallelize(model, meshes), "cpu")
    extra = load_distributed(out / "ckpt", model)
    ids = shard(batches(env.world_size)[0], env.rank, env.world_size)
    with torch.no_grad():
        same = torch.equal(model(ids).logits, trained(ids).logits)
    init_sharded_weights(model)
    experts = full(model.model.layers[0].mlp.experts.gate_up_proj)
    return {"extra": extra, "same_logits": same, "init_std": float(experts.std())}


def bad_meshes(env) -> list[str]:  # noqa: ANN001
    messages = []
    for world, experts, ep in ((env.world_size, 4, 3), (env.world_size, 3, 2)):
        try:
            build_mesh(world, experts, ep=ep)
            messages.append("no error")
        except MeshError as e:
            messages.append(str(e))
    return messages


def failed_save(out: Path, model, env) -> str:  # noqa: ANN001
    """Rank 1's storage fails half-way through the save: every rank must raise, nothing must remain."""
    from torch.distributed.checkpoint import FileSystemWriter

    original = FileSystemWriter.write_data
    if env.rank == 1:

        def broken(self, plan, planner):  # noqa: ANN001, ANN202
            raise OSError("disk full (simulated)")

        FileSystemWriter.write_data = broken
    try:
        save_distributed(out / "broken_ckpt", model)
        return "saved"
    except DistCheckpointError as e:
        return str(e)
    finally:
        FileSystemWriter.write_data = original


def main(out: Path, scenario: str) -> None:
    if scenario == "hang":
        env = init_distributed(timeout_s=float(os.environ["HANG_TIMEOUT"]))
        if env.rank == 1:
            time.sleep(300)  # alive but silent: torchrun stops it once rank 0 fails
        t0 = time.monotonic()
        try:
            dist.all_reduce(torch.ones(1))
            result = {"error": None}
        except Exception as e:  # noqa: BLE001
            result = {"error": f"{type(e).__name__}: {e}", "waited_s": time.monotonic() - t0}
        (out / "hang.json").write_text(json.dumps(result))
        os._exit(1)

    if scenario == "dead":
        env = init_distributed(timeout_s=float(os.environ["HANG_TIMEOUT"]))
        if env.rank == 1:
            os._exit(3)  # dies without a word
        try:
            dist.all_reduce(torch.ones(1))
            result = {"error": None}
        except Exception as e:  # noqa: BLE001
            result = {"error": f"{type(e).__name__}: {e}"}
        (out / "dead.json").write_text(json.dumps(result))
        os._exit(1)

    env = init_distributed(timeout_s=120)
    results = {"mesh_errors": bad_meshes(env)}
    results["fsdp"], _, _ = train(1, env)
    results["ep_ac"], _, _ = train(2, env, ac=True)
    results["ep"], model, opt = train(2, env)
    results["rollout_state"] = full_state_for_rollout(model, to_cpu=True)
    results["rl"] = rl_across_ranks(env)
    save_distributed(out / "ckpt", model, opt, extra={"step": 3})
    results["meta"] = meta_resume(out, model, env)
    results["failed_save"] = failed_save(out, model, env)
    results["failed_save_leftovers"] = sorted(p.name for p in out.iterdir() if "broken" in p.name)
    torch.save(results, out / f"rank{env.rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
