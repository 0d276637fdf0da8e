"""Checkpoints: load transformers' ``minimax`` folders and the original MiniMaxAI release; save the former.

On disk both layouts name experts one by one (``block_sparse_moe.experts.E.{w1,w3,w2}.weight``, as
Mixtral does) and the router ``block_sparse_moe.gate.weight``; in memory openm1 holds them fused like
transformers does. Loading is lazy: safetensors headers are read first, every name and shape is checked
against the model before a byte of weight is read, and then tensors are streamed one at a time from the
memory-mapped files straight to the target device, so a checkpoint never needs its size in host RAM.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from openm1.config import ModelConfig, atomic_write_text

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

#: Tensors some writers store that are functions of the config; never loaded.
DERIVED_SUFFIXES = ("slope_rate", "query_decay", "key_decay", "diagonal_decay", "rotary_emb.inv_freq")

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}


class CheckpointError(ValueError):
    """A checkpoint that does not match its configuration or is damaged; the message names the tensor."""


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str
    shape: tuple[int, ...]


# ---------------------------------------------------------------------- reading headers
def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes from a safetensors header, checking that the data is all there."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
        (header_len,) = struct.unpack("<Q", raw)
        if 8 + header_len > size:
            raise CheckpointError(
                f"{path} is truncated: its header claims {header_len} bytes but the file has {size}"
            )
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} has a corrupt safetensors header: {e}") from e
    header.pop("__metadata__", None)
    end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if 8 + header_len + end > size:
        raise CheckpointError(
            f"{path} is truncated: its tensors need {8 + header_len + end} bytes, the file has {size}; "
            "download or copy it again"
        )
    return {name: TensorInfo(path, v["dtype"], tuple(v["shape"])) for name, v in header.items()}


def index_checkpoint(folder: Path) -> dict[str, TensorInfo]:
    """Every tensor of a checkpoint folder (single file or sharded with an index)."""
    index_path = folder / INDEX_NAME
    if index_path.is_file():
        weight_map = json.loads(index_path.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise CheckpointError(f"{folder}: the index names shard {missing[0]} which is not in the folder")
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{folder} holds no .safetensors files (and no {INDEX_NAME})")
    tensors: dict[str, TensorInfo] = {}
    for name in files:
        for key, info in read_safetensors_header(folder / name).items():
            if key in tensors:
                raise CheckpointError(f"tensor {key} appears in both {tensors[key].file.name} and {name}")
            tensors[key] = info
    return tensors


# ---------------------------------------------------------------------- name mapping
@dataclass(frozen=True)
class DiskSlot:
    """Where one on-disk tensor goes: a parameter, optionally a slice of it (fused experts)."""

    param: str
    index: tuple = ()
    shape: tuple[int, ...] = ()


def disk_layout(config: ModelConfig) -> dict[str, DiskSlot]:
    """On-disk name -> destination in openm1's state dict, with the expected on-disk shape."""
    c = config
    hid, inner, kv, e, i = (
        c.hidden_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
        c.num_local_experts,
        c.intermediate_size,
    )
    out: dict[str, DiskSlot] = {
        "model.embed_tokens.weight": DiskSlot("model.embed_tokens.weight", (), (c.vocab_size, hid)),
        "model.norm.weight": DiskSlot("model.norm.weight", (), (hid,)),
    }
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = DiskSlot("lm_head.weight", (), (c.vocab_size, hid))
    for n, kind in enumerate(c.layer_types):
        p = f"model.layers.{n}."
        shapes = {"input_layernorm.weight": (hid,), "post_attention_layernorm.weight": (hid,)}
        if kind == "linear_attention":
            shapes |= {
                "self_attn.qkv_proj.weight": (3 * inner, hid),
                "self_attn.output_gate.weight": (inner, hid),
                "self_attn.out_proj.weight": (hid, inner),
                "self_attn.norm.weight": (inner,),
            }
        else:
            shapes |= {
                "self_attn.q_proj.weight": (inner, hid),
                "self_attn.k_proj.weight": (kv, hid),
                "self_attn.v_proj.weight": (kv, hid),
                "self_attn.o_proj.weight": (hid, inner),
            }
        for name, shape in shapes.items():
            out[p + name] = DiskSlot(p + name, (), shape)
        out[p + "block_sparse_moe.gate.weight"] = DiskSlot(p + "mlp.gate.weight", (), (e, hid))
        for x in range(e):
            q = f"{p}block_sparse_moe.experts.{x}."
            out[q + "w1.weight"] = DiskSlot(p + "mlp.experts.gate_up_proj", (x, slice(0, i)), (i, hid))
            out[q + "w3.weight"] = DiskSlot(p + "mlp.experts.gate_up_proj", (x, slice(i, 2 * i)), (i, hid))
            out[q + "w2.weight"] = DiskSlot(p + "mlp.experts.down_proj", (x,), (hid, i))
    return out


def _is_derived(name: str) -> bool:
    return name.endswith(DERIVED_SUFFIXES)


# ---------------------------------------------------------------------- loading
def from_pretrained(
    folder: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    strict: bool = True,
):
    """Load a local checkpoint folder (transformers ``minimax`` or original MiniMaxAI layout).

    ``dtype`` defaults to the dtype the weights are stored in. Every name and shape is checked before
    any weight is read; the model is returned only once every tensor has been loaded. With
    ``strict=False`` unknown extra tensors are ignored instead of refused.
    """
    from openm1.model.model import MiniMaxM1ForCausalLM

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    config = ModelConfig.load(folder)
    tensors = index_checkpoint(folder)
    layout = disk_layout(config)

    problems = []
    for name, slot in layout.items():
        info = tensors.get(name)
        if info is None:
            problems.append(f"missing tensor {name} (expected shape {list(slot.shape)})")
        elif info.shape != slot.shape:
            problems.append(
                f"tensor {name} in {info.file.name} has shape {list(info.shape)}, expected {list(slot.shape)}"
            )
        elif info.dtype not in _DTYPES or not _DTYPES[info.dtype].is_floating_point:
            problems.append(f"tensor {name} has dtype {info.dtype}, expected a floating-point dtype")
    extra = sorted(n for n in tensors if n not in layout and not _is_derived(n))
    if extra and strict:
        problems.append(
            f"{len(extra)} tensors the configuration does not explain, e.g. {extra[0]} "
            "(a checkpoint of another configuration? pass strict=False to ignore them)"
        )
    if problems:
        head = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CheckpointError(f"{folder} does not match its config.json:\n  {head}{more}")

    if dtype is None:
        dtype = _DTYPES[tensors["model.embed_tokens.weight"].dtype]
    elif isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)}")
        dtype = _DTYPE_NAMES[dtype]

    with torch.device("meta"):
        model = MiniMaxM1ForCausalLM(config)
    model.to_empty(device=device)
    model.to(dtype)  # the LM head stays float32 when the config asks for it
    params = dict(model.named_parameters())
    by_file: dict[Path, list[str]] = {}
    for name in layout:
        by_file.setdefault(tensors[name].file, []).append(name)
    with torch.no_grad():
        for file, names in by_file.items():
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in names:
                    slot = layout[name]
                    target = params[slot.param]
                    if slot.index:
                        target = target[slot.index]
                    target.copy_(f.get_tensor(name))
    model.init_derived_buffers()
    model.eval()
    return model


# ---------------------------------------------------------------------- saving
def save_pretrained(model, folder: str | os.PathLike, max_shard_bytes: int = 5 * 2**30) -> None:
    """Write config.json and safetensors shards in transformers' layout, atomically.

    Files are written to a temporary folder beside the target and moved in only when all are complete;
    the index and config.json come last, so a reader never sees a half-written checkpoint.
    """
    folder = Path(folder)
    config: ModelConfig = model.config
    state = model.state_dict()
    disk: dict[str, torch.Tensor] = {}
    for name, slot in disk_layout(config).items():
        t = state[slot.param]
        if slot.index:
            t = t[slot.index]
        disk[name] = t.detach().to("cpu").contiguous()

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in disk.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        names = (
            [SINGLE_NAME]
            if len(shards) == 1
            else [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
        )
        weight_map = {}
        for fname, shard in zip(names, shards, strict=True):
            save_file(shard, str(tmp / fname), metadata={"format": "pt"})
            weight_map |= {k: fname for k in shard}
        folder.mkdir(exist_ok=True)
        old_index = folder / INDEX_NAME
        stale = (
            set(json.loads(old_index.read_text())["weight_map"].values()) if old_index.is_file() else set()
        )
        for fname in names:
            os.replace(tmp / fname, folder / fname)
        if len(shards) > 1:
            total = sum(t.numel() * t.element_size() for t in disk.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            atomic_write_text(folder / INDEX_NAME, json.dumps(index, indent=2) + "\n")
        else:
            (folder / INDEX_NAME).unlink(missing_ok=True)
        for fname in stale - set(names):
            (folder / fname).unlink(missing_ok=True)
        cfg = config.to_dict()
        cfg["dtype"] = str(state["model.embed_tokens.weight"].dtype).removeprefix("torch.")
        atomic_write_text(folder / "config.json", json.dumps(cfg, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
