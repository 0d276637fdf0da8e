"""Process group and device mesh from torchrun's environment, checked before any collective runs.

Every rank computes the same checks from the same arguments, so a mesh that cannot work raises the same
:class:`MeshError` on every rank instead of leaving some ranks waiting in a collective. A rank that dies
later is caught twice: ``torchrun`` stops the other workers when one exits with an error, and every
collective has the process group's ``timeout`` (``OPENM1_DIST_TIMEOUT`` seconds, default 600), after
which it raises instead of waiting for ever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

DEFAULT_TIMEOUT_S = 600.0
#: Mesh dimension names: experts are split over "ep"; FSDP shards experts over "dp" and the rest over
#: the flattened "dp_ep" (all ranks).
DP, EP, DP_EP = "dp", "ep", "dp_ep"


class MeshError(ValueError):
    """A parallel layout that cannot be built; raised identically on every rank."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job, as torchrun describes it."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    timeout_s: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int_env(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise MeshError(
                f"{name} is not set; launch with torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK"
            )
        return default
    try:
        return int(raw)
    except ValueError:
        raise MeshError(f"{name}={raw!r} is not an integer") from None


def init_distributed(backend: str | None = None, timeout_s: float | None = None) -> DistEnv:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs) and return this rank's place.

    Without torchrun (no ``WORLD_SIZE``) this is a one-process group, so the same code path runs
    everywhere. ``timeout_s`` bounds every collective (default ``OPENM1_DIST_TIMEOUT`` or 600 s).
    """
    if timeout_s is None:
        timeout_s = float(os.environ.get("OPENM1_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    if timeout_s <= 0:
        raise MeshError(f"the collective timeout must be positive, got {timeout_s} s")
    world = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    local_rank = _int_env("LOCAL_RANK", rank)
    if not 0 <= rank < world:
        raise MeshError(f"RANK={rank} is outside WORLD_SIZE={world}")
    use_cuda = torch.cuda.is_available() if backend is None else backend == "nccl"
    backend = backend or ("nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world == 1 and "MASTER_ADDR" not in os.environ:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return DistEnv(rank, world, local_rank, backend, device, timeout_s)


def maybe_init_distributed() -> DistEnv | None:
    """This rank's place when running under torchrun (joining the process group if nobody has yet),
    None in a plain single process: the trainers call this so one code path serves both."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() == 1:
            return None
        return current_env()
    if _int_env("WORLD_SIZE", 1) > 1:
        return init_distributed()
    return None


def current_env() -> DistEnv:
    """The :class:`DistEnv` of an already initialised process group."""
    if not dist.is_initialized():
        raise MeshError("no process group: call openm1.distributed.init_distributed() first")
    backend = dist.get_backend()
    local_rank = _int_env("LOCAL_RANK", dist.get_rank())
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    timeout_s = float(os.environ.get("OPENM1_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, backend, device, timeout_s)


def is_main_process() -> bool:
    """Rank 0, or a plain process: the one that writes metrics, plots, reports and progress bars."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in one process): after rank 0 writes files the others read."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_mesh(world_size: int, num_experts: int, ep: int) -> None:
    """Raise :class:`MeshError` unless ``ep`` divides both the processes and the experts."""
    if ep < 1:
        raise MeshError(f"the expert-parallel degree must be a positive integer, got ep={ep}")
    if world_size % ep:
        ok = [d for d in range(1, world_size + 1) if world_size % d == 0 and num_experts % d == 0]
        raise MeshError(
            f"ep={ep} does not divide the {world_size} processes (WORLD_SIZE); choose ep in {ok} "
            "or launch a multiple of ep processes"
        )
    if num_experts % ep:
        ok = [d for d in range(1, num_experts + 1) if num_experts % d == 0 and world_size % d == 0]
        raise MeshError(f"ep={ep} does not divide the {num_experts} experts of the model; choose ep in {ok}")


@dataclass(frozen=True)
class Meshes:
    """The ``(dp, ep)`` device mesh and the views of it that parallelism needs."""

    mesh: DeviceMesh
    """2-D, ``dp x ep = world``; ``ep`` is the inner (fastest-varying) dimension."""
    dp: DeviceMesh
    """Ranks holding the same experts: FSDP shards the experts over these."""
    ep: DeviceMesh
    """Ranks that split the experts between them and exchange tokens by all-to-all."""
    dp_ep: DeviceMesh
    """All ranks, one dimension: FSDP shards everything but the experts over these."""

    @property
    def device_type(self) -> str:
        return self.mesh.device_type


def build_mesh(world_size: int, num_experts: int, ep: int = 1, device_type: str | None = None) -> Meshes:
    """A 2-D mesh ``(dp, ep)`` with ``dp x ep = world_size``, plus the flattened ``dp_ep`` dimension.

    Checked first (:func:`check_mesh`), identically on every rank. Needs an initialised process group.
    """
    check_mesh(world_size, num_experts, ep)
    if not dist.is_initialized():
        raise MeshError("no process group: call openm1.distributed.init_distributed() first")
    if dist.get_world_size() != world_size:
        raise MeshError(f"world_size={world_size} but the process group has {dist.get_world_size()} ranks")
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    mesh = init_device_mesh(device_type, (world_size // ep, ep), mesh_dim_names=(DP, EP))
    # DeviceMesh._flatten is private in torch 2.13 (torchtitan uses it too): all ranks as one dimension.
    return Meshes(mesh, mesh[DP], mesh[EP], mesh._flatten(DP_EP))
