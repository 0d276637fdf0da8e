"""Atomic, resumable training checkpoints.

``DIR/step-000050/`` holds the model in transformers' layout (usable by ``openm1 generate`` and
``openm1 eval``) and ``trainer.pt`` (optimizer, step, data position, RNG states). A checkpoint is
written in a temporary folder and renamed into place, then ``DIR/latest`` is rewritten atomically to
name it: a run killed while writing leaves the previous checkpoint as the latest, never half of one.

Under torchrun the same ``DIR/step-NNNNNN`` is a distributed checkpoint (DCP, see
:mod:`openm1.distributed.checkpoint`): every rank writes its shards, ``openm1_dist.json`` holds the
trainer state, and it resumes on any number of processes, one included.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from openm1.config import atomic_write_text

LATEST = "latest"
STATE_NAME = "trainer.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: str | os.PathLike, step: int, model: torch.nn.Module, state: dict[str, Any], keep: int = 2
) -> Path:
    """Write ``folder/step-NNNNNN`` atomically, point ``folder/latest`` at it, keep the newest ``keep``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}.tmp-"))
    try:
        model.save_pretrained(tmp)
        torch.save(state, tmp / STATE_NAME)
        final = folder / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(folder / LATEST, name + "\n")
    for old in sorted(p for p in folder.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob(".step-*.tmp-*"):  # left by a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    return final


def save_sharded_checkpoint(
    folder: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """The distributed form of :func:`save_checkpoint` (call on every rank): DCP shards with ``state``
    (JSON) beside them, then rank 0 points ``folder/latest`` at it and prunes old ones."""
    from openm1.distributed.checkpoint import save_distributed
    from openm1.distributed.env import barrier, is_main_process

    folder = Path(folder)
    name = f"step-{step:06d}"
    final = save_distributed(folder / name, model, optimizer, extra=state)
    if is_main_process():
        atomic_write_text(folder / LATEST, name + "\n")
        for old in sorted(p for p in folder.glob("step-*") if p.is_dir())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def jsonable_rng_state() -> dict[str, Any]:
    """:func:`rng_state` as JSON (for a distributed checkpoint's metadata); this rank's CPU states."""
    version, internal, gauss = random.getstate()
    return {"python": [version, list(internal), gauss], "torch": torch.get_rng_state().tolist()}


def set_jsonable_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    from openm1.distributed.checkpoint import is_distributed_checkpoint

    return is_distributed_checkpoint(path)


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint ``folder/latest`` names, or None when there is none yet."""
    pointer = Path(folder) / LATEST
    if not pointer.is_file():
        return None
    path = Path(folder) / pointer.read_text().strip()
    if not (path / STATE_NAME).is_file() and not is_sharded_checkpoint(path):
        raise FileNotFoundError(
            f"{pointer} names {path.name}, which has no {STATE_NAME}: the checkpoint folder was altered"
        )
    return path


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module) -> dict[str, Any]:
    """Load the weights of checkpoint ``path`` into ``model`` (in place) and return its trainer state."""
    from openm1.model.checkpoint import from_pretrained

    path = Path(path)
    loaded = from_pretrained(path, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        own = model.state_dict()
        for name, tensor in loaded.state_dict().items():
            own[name].copy_(tensor)
    return torch.load(path / STATE_NAME, map_location="cpu", weights_only=False)
