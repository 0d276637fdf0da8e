"""Distributed checkpoints with ``torch.distributed.checkpoint`` (DCP): save on N ranks, resume on M.

DCP stores every tensor by its logical name and shape (FSDP shards and expert slices included), so a
checkpoint written by 2 ranks loads on 1, on 8, with or without expert parallelism. Beside DCP's files
the folder holds ``openm1_dist.json``: the model configuration (checked on load: a checkpoint of another
configuration is refused with the fields that differ), the world size it was saved from, and the
caller's ``extra`` (step, data position ...).

Atomic: ranks write into a temporary folder beside the target; only when every rank reports success
does rank 0 add ``openm1_dist.json`` and move the folder into place. On any failure the temporary folder
is removed and every rank raises, so a reader never sees a partial checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from openm1.config import ModelConfig, atomic_write_text

META_NAME = "openm1_dist.json"
FORMAT = "openm1-dcp"


class DistCheckpointError(ValueError):
    """A distributed checkpoint that is missing, partial, or of another configuration."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns that it assumes one process even when told so (``no_dist``); that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninit")
        yield


def _agree(value: object) -> list[object]:
    """Every rank's ``value`` (one element when not distributed)."""
    if not _distributed():
        return [value]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def save_distributed(
    folder: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict | None = None,
) -> Path:
    """Save ``model`` (and ``optimizer``) from every rank into ``folder``, atomically; call on all ranks."""
    folder = Path(folder).resolve()
    config: ModelConfig = model.config
    tmp = folder.parent / str(_agree(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")[0])
    error = None
    try:
        if _rank() == 0:
            tmp.mkdir(parents=True)
        _agree(None)  # the folder exists before anyone writes into it
        state = {"model": get_model_state_dict(model)}
        if optimizer is not None:
            state["optim"] = get_optimizer_state_dict(model, optimizer)
        with _quiet_single_process():
            dcp.save(state, checkpoint_id=str(tmp), no_dist=not _distributed())
    except (Exception, CheckpointException) as e:  # reported to every rank below
        error = f"rank {_rank()}: {type(e).__name__}: {e}"
    errors = [e for e in _agree(error) if e]
    if not errors and _rank() == 0:
        meta = {
            "format": FORMAT,
            "version": 1,
            "world_size": dist.get_world_size() if _distributed() else 1,
            "has_optimizer": optimizer is not None,
            "config": config.to_dict(),
            "extra": extra or {},
        }
        try:
            atomic_write_text(tmp / META_NAME, json.dumps(meta, indent=2) + "\n")
            _replace_folder(tmp, folder)
        except Exception as e:  # noqa: BLE001
            errors.append(f"rank 0: {type(e).__name__}: {e}")
    errors = [e for e in _agree(errors[0] if errors else None) if e] if _distributed() else errors
    if errors:
        if _rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise DistCheckpointError(f"saving {folder} failed, nothing was written: {errors[0]}")
    return folder


class _FullModel:
    """What :func:`openm1.model.checkpoint.save_pretrained` reads of a model: its config and state."""

    def __init__(self, config: ModelConfig, state: dict[str, torch.Tensor]) -> None:
        self.config, self._state = config, state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def save_full_pretrained(model: nn.Module, folder: str | os.PathLike) -> Path:
    """The ordinary single-folder (transformers) checkpoint of a model sharded over ranks: the full
    weights are gathered to rank 0 (on the host, one tensor at a time), which writes them; the other
    ranks wait, so the folder exists everywhere when this returns. Call on all ranks. A model that is
    not sharded is written by rank 0 as it is."""
    from openm1.distributed.fsdp import is_parallelized
    from openm1.model.checkpoint import save_pretrained

    folder = Path(folder)
    if is_parallelized(model):
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=opts)  # rank 0 holds it, the others get {}
        if _rank() == 0:
            save_pretrained(_FullModel(model.config, state), folder)
    elif _rank() == 0:
        save_pretrained(model, folder)
    if _distributed():
        dist.barrier()
    return folder


def load_full_pretrained(model: nn.Module, folder: str | os.PathLike) -> None:
    """Load a single-folder checkpoint into ``model``, sharded or not (each rank reads the folder and
    keeps its shards): how a model saved by one process continues on several."""
    from openm1.distributed.fsdp import is_parallelized
    from openm1.model.checkpoint import from_pretrained

    loaded = from_pretrained(folder, device="cpu", dtype=torch.float32).state_dict()
    if is_parallelized(model):
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, loaded, options=opts)
        return
    with torch.no_grad():
        own = model.state_dict()
        for name, tensor in loaded.items():
            own[name].copy_(tensor)


def load_full_optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, group_names: list[list[str]]
) -> None:
    """Load a one-process optimizer ``state_dict()`` (parameters by position) into the optimizer of
    the sharded ``model``; ``group_names`` names each group's parameters in the saved order."""
    by_index: dict[int, str] = {}
    groups = []
    for saved, names in zip(state["param_groups"], group_names, strict=True):
        if len(saved["params"]) != len(names):
            raise DistCheckpointError(
                f"the optimizer state has {len(saved['params'])} parameters in a group where the model "
                f"has {len(names)}: not a checkpoint of this model"
            )
        by_index |= dict(zip(saved["params"], names, strict=True))
        groups.append({**saved, "params": list(names)})
    full = {"state": {by_index[i]: st for i, st in state["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))


def is_distributed_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a checkpoint written by :func:`save_distributed`."""
    return (Path(folder) / META_NAME).is_file()


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Move ``tmp`` to ``folder``; an older checkpoint there is removed only once the new one is in."""
    old = None
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_meta(folder: str | os.PathLike) -> dict:
    """The ``openm1_dist.json`` of a distributed checkpoint, or a :class:`DistCheckpointError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DistCheckpointError(f"distributed checkpoint folder {folder} does not exist")
    path = folder / META_NAME
    if not path.is_file():
        raise DistCheckpointError(
            f"{folder} has no {META_NAME}: not an openm1 distributed checkpoint, or an incomplete one "
            "(a single-folder transformers checkpoint loads with from_pretrained / transformers_to_dcp)"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise DistCheckpointError(f"{path} is not in the {FORMAT} format")
    return meta


def config_differences(saved: dict, current: ModelConfig) -> list[str]:
    """Fields whose values differ between a saved configuration and ``current``."""
    now = current.to_dict()
    keys = sorted(set(saved) | set(now))
    skip = {"dtype", "torch_dtype", "architectures", "transformers_version"}
    return [
        f"{k}: checkpoint {saved.get(k)!r}, model {now.get(k)!r}"
        for k in keys
        if k not in skip and saved.get(k) != now.get(k)
    ]


def load_distributed(
    folder: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict:
    """Load a checkpoint saved on any number of ranks into ``model`` (sharded or not); call on all ranks.

    Returns the ``extra`` dict given at save time. Refuses a checkpoint of another configuration.
    """
    meta = read_meta(folder)
    diffs = config_differences(meta["config"], model.config)
    if diffs:
        listed = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise DistCheckpointError(
            f"{folder} was saved from another model configuration ({listed}); build the model from the "
            f"checkpoint's config (openm1_dist.json) or pick the matching checkpoint"
        )
    if optimizer is not None and not meta["has_optimizer"]:
        raise DistCheckpointError(f"{folder} holds no optimizer state; load the model only (optimizer=None)")
    state = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(model, optimizer)
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=str(folder), no_dist=not _distributed())
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optim"])
    return meta["extra"]


def dcp_to_transformers(
    dcp_folder: str | os.PathLike, out_folder: str | os.PathLike, dtype: str | None = None
) -> Path:
    """Write a distributed checkpoint as one transformers ``minimax`` folder, one decoder layer at a time.

    Host memory holds one layer (plus the embedding or head), never the whole model, so the 456B model
    converts on an ordinary host. One safetensors file per layer, an index, and config.json; written
    into a temporary folder and moved into place only when complete. ``dtype`` (e.g. ``bfloat16``)
    casts on the way; by default tensors keep the checkpoint's dtype.
    """
    from safetensors.torch import save_file

    from openm1.model.checkpoint import _DTYPE_NAMES, INDEX_NAME, disk_layout

    meta = read_meta(dcp_folder)
    config = ModelConfig.from_dict(meta["config"])
    cast = None
    if dtype is not None:
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)}")
        cast = _DTYPE_NAMES[dtype]
    stored = dcp.FileSystemReader(str(dcp_folder)).read_metadata().state_dict_metadata
    by_unit: dict[str, dict[str, object]] = {}
    for disk_name, slot in disk_layout(config).items():
        parts = slot.param.split(".")
        unit = ".".join(parts[:3]) if parts[1] == "layers" else slot.param
        by_unit.setdefault(unit, {})[disk_name] = slot
    out_folder = Path(out_folder).resolve()
    out_folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_folder.parent / f".{out_folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        weight_map, total, dtype_name = {}, 0, None
        for k, slots in enumerate(by_unit.values()):
            params = sorted({slot.param for slot in slots.values()})
            missing = [p for p in params if f"model.{p}" not in stored]
            if missing:
                raise DistCheckpointError(f"{dcp_folder} lacks {missing[0]}: a damaged checkpoint")
            state = {
                "model": {
                    p: torch.empty(stored[f"model.{p}"].size, dtype=stored[f"model.{p}"].properties.dtype)
                    for p in params
                }
            }
            with _quiet_single_process():
                dcp.load(state, checkpoint_id=str(dcp_folder), no_dist=True)
            shard = {}
            for disk_name, slot in slots.items():
                t = state["model"][slot.param]
                t = t[slot.index] if slot.index else t
                t = (t.to(cast) if cast is not None else t).contiguous()
                shard[disk_name] = t
                total += t.numel() * t.element_size()
                dtype_name = dtype_name or str(t.dtype).removeprefix("torch.")
            fname = f"model-{k + 1:05d}-of-{len(by_unit):05d}.safetensors"
            save_file(shard, str(tmp / fname), metadata={"format": "pt"})
            weight_map |= {name: fname for name in shard}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        atomic_write_text(tmp / INDEX_NAME, json.dumps(index, indent=2) + "\n")
        cfg = config.to_dict()
        cfg["dtype"] = dtype_name
        atomic_write_text(tmp / "config.json", json.dumps(cfg, indent=2) + "\n")
        _replace_folder(tmp, out_folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_folder


def transformers_to_dcp(
    hf_folder: str | os.PathLike, out_folder: str | os.PathLike, dtype: str = "float32"
) -> Path:
    """Turn a transformers / MiniMaxAI single-folder checkpoint into a distributed one (float32 masters
    by default, what FSDP training keeps), to resume on any number of ranks with :func:`load_distributed`."""
    from openm1.model.checkpoint import from_pretrained

    if _distributed():
        raise DistCheckpointError("transformers_to_dcp runs in one process; call it before init_distributed")
    model = from_pretrained(hf_folder, dtype=dtype)
    return save_distributed(out_folder, model)
