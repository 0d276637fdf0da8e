"""Launchers, the backward pass, and the ``torch.library`` custom ops around the Triton kernels.

Gradients reuse the forward scan. For ``o_i = sum_{j<=i} lam^(i-j) (q_i . k_j) v_j + lam^(i+1) q_i S0``:

* ``dq`` is a forward scan of (q' = dO, k' = v, v' = k) from the state ``S0^T``;
* ``dk`` is a reverse scan of (q' = v, k' = dO, v' = q) ending in ``dS_T^T / lam``;
* ``dv`` is a reverse scan of (q' = k, k' = q, v' = dO) ending in ``dS_T / lam``; its state at the
  start, times ``lam``, is ``dS0``.

(``dS_T`` is the gradient of the final state; the ``1/lam`` makes the reverse scan's inclusive decay
match the forward's.) Registering the ops with ``torch.library`` lets ``torch.compile`` trace models
that use them without graph breaks.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
from torch import Tensor

from openm1.ops.lightning.triton import kernels

SUPPORTED_DIMS = (16, 32, 64, 128, 256)

#: Tests set this to fill outputs with NaN before each launch, so an element no kernel wrote fails.
POISON_OUTPUTS = False


def _empty(*shape: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(*shape, device=device, dtype=dtype)


# ---------------------------------------------------------------------- launch configuration
def _config(dk: int, dv: int) -> dict:
    """Chunk length, value-tile width and warps; ``OPENM1_LA_CONFIG=C,BV,warps,stages`` overrides."""
    override = os.environ.get("OPENM1_LA_CONFIG")
    if override:
        c, bv, warps, stages = (int(x) for x in override.split(","))
        return {"C": c, "BV": min(bv, dv), "num_warps": warps, "num_stages": stages}
    if max(dk, dv) >= 256:
        return {"C": 32, "BV": min(32, dv), "num_warps": 4, "num_stages": 1}
    return {"C": 64, "BV": min(64, dv), "num_warps": 4, "num_stages": 2}


def _segment_length(total: int, heads: int, value_tiles: int, chunk: int) -> int:
    """Tokens per segment: long enough that per-segment states cost little, short enough that the
    grid (segments x heads x value tiles) has ``OPENM1_LA_PROGRAMS`` (512) programs to fill the GPU
    even at batch 1."""
    want = total * heads * value_tiles // int(os.environ.get("OPENM1_LA_PROGRAMS", "512"))
    length = max(256, min(8192, want))
    return max(chunk, (length // chunk) * chunk)


def _single_pass(offsets: list[int], heads: int, value_tiles: int) -> bool:
    """One program per (sequence, head, value tile), no state/scan launches: right when those
    programs alone fill the GPU (many sequences), since it reads q, k, v once instead of k, v twice.
    ``OPENM1_LA_SINGLE_PASS_MIN`` is the program count from which it is used (0 = never)."""
    threshold = int(os.environ.get("OPENM1_LA_SINGLE_PASS_MIN", "128"))
    lengths = [b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    if threshold <= 0 or min(lengths, default=0) == 0:
        return False  # an empty sequence's final state is its initial state: the segmented path copies it
    return (len(offsets) - 1) * heads * value_tiles >= threshold


def _segments(offsets: list[int], seg_len: int, device: torch.device):
    """Segment starts, ends (and lengths) and each sequence's first segment, on the device.

    Cached per (offsets, segment length, device), and copied from pinned memory without blocking, so
    the lightning layers of one forward (which share their offsets) cost no host round trip."""
    return _segments_cached(tuple(offsets), seg_len, device)


@functools.lru_cache(maxsize=256)
def _segments_cached(offsets: tuple[int, ...], seg_len: int, device: torch.device):
    starts, ends, seq_begin = [], [], [0]
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):
        for s in range(a, b, seg_len):
            starts.append(s)
            ends.append(min(s + seg_len, b))
        seq_begin.append(len(starts))
    n_seg = len(starts)
    starts, ends = starts or [0], ends or [0]
    lengths = [e - s for s, e in zip(starts, ends, strict=True)]
    host = torch.tensor(starts + ends + lengths + seq_begin, dtype=torch.int32)
    if device.type == "cuda":
        host = host.pin_memory()  # kept alive by the cache while the asynchronous copy runs
    packed = host.to(device, non_blocking=True)
    n = len(starts)
    return packed[:n], packed[n : 2 * n], packed[2 * n : 3 * n], packed[3 * n :], n_seg


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    slopes: Tensor,
    offsets: list[int],
    initial_state: Tensor | None,
    reverse: bool,
) -> tuple[Tensor, Tensor]:
    """Lightning attention over packed tokens ``[T, H, D]`` (sequences at ``offsets``), forwards or in
    reverse; returns ``(o [T, H, Dv], final_state [N, H, Dk, Dv] float32)``."""
    total, heads, dk = q.shape
    dv = v.shape[-1]
    cfg = _config(dk, dv)
    chunk, bv = cfg["C"], cfg["BV"]
    n_vb = triton.cdiv(dv, bv)
    n_seq = len(offsets) - 1
    slopes = slopes.to(device=q.device, dtype=torch.float32).contiguous()
    prec = _precision(q.dtype)
    dot_f32 = q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"
    o = _empty(total, heads, dv, device=q.device, dtype=q.dtype)
    final = _empty(n_seq, heads, dk, dv, device=q.device, dtype=torch.float32)
    single = _single_pass(offsets, heads, n_vb)
    meta = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
    # The state update as k^T (w v), k's loaded tile used as it is, not (w k)^T v: 7-37% less forward time on
    # an H100 (bench/results/lightning-sweep-2026-11-23T1653-h100.json); OPENM1_LA_DECAY_ON_V=0 undoes it.
    decay_on_v = os.environ.get("OPENM1_LA_DECAY_ON_V", "1") == "1"
    meta["DECAY_ON_V"] = decay_on_v
    if single and not os.environ.get("OPENM1_LA_CONFIG"):
        # H100 sweep (bench/results/lightning-sweep-*.json): the single pass's long chunk loop wants a
        # deeper load pipeline, and whole 128-wide value tiles (q and k read once) when the grid
        # stays full without splitting them.
        meta["num_stages"] += 1
        wide_min = int(os.environ.get("OPENM1_LA_WIDE_MIN", "256"))  # (sequence, head) pairs
        # (2-byte inputs only: float32 tiles that wide overflow shared memory on an H100)
        wide_ok = not decay_on_v and q.element_size() == 2 and max(dk, dv) <= 128 and dv > bv
        if wide_ok and n_seq * heads >= wide_min:
            bv, n_vb, meta["num_warps"] = dv, 1, 8
    if single:
        seg_len = max(b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True))
    else:
        seg_len = _segment_length(total, heads, n_vb, chunk)
    seg_start, seg_end, seg_lengths, seq_begin, n_seg = _segments(offsets, seg_len, q.device)
    if single:
        init = initial_state.float().contiguous() if initial_state is not None else final
        kernels._segment_output[(n_seg * heads * n_vb,)](
            q, k, v, o, seg_start, seg_end, init, final, slopes,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            o.stride(0), o.stride(1), init.stride(0), init.stride(1), final.stride(0), final.stride(1),
            H=heads, DK=dk, DV=dv, BV=bv, C=chunk, REVERSE=reverse, PREC=prec, DOT_F32=dot_f32,
            HAS_STATE=initial_state is not None, STORE_FINAL=True, **meta,
        )  # fmt: skip
        return o, final
    seg_states = _empty(max(n_seg, 1), heads, dk, dv, device=q.device, dtype=torch.float32)
    if n_seg:
        kernels._segment_state[(n_seg * heads * n_vb,)](
            k, v, seg_start, seg_end, seg_states, slopes,
            k.stride(0), k.stride(1), v.stride(0), v.stride(1), seg_states.stride(0), seg_states.stride(1),
            H=heads, DK=dk, DV=dv, BV=bv, C=chunk, REVERSE=reverse, PREC=prec, DOT_F32=dot_f32, **meta,
        )  # fmt: skip
    init = initial_state.float().contiguous() if initial_state is not None else final
    bk_scan, bv_scan = min(dk, 64), min(dv, 64)
    n_tiles = triton.cdiv(dk, bk_scan) * triton.cdiv(dv, bv_scan)
    kernels._segment_scan[(n_seq, heads, n_tiles)](
        seg_states, seq_begin, seg_lengths, init, final, slopes,
        seg_states.stride(0), seg_states.stride(1), final.stride(0), final.stride(1),
        H=heads, DK=dk, DV=dv, BK=bk_scan, BV=bv_scan, REVERSE=reverse,
        HAS_INIT=initial_state is not None, STORE_FINAL=True, num_warps=4,
    )  # fmt: skip
    if n_seg:
        kernels._segment_output[(n_seg * heads * n_vb,)](
            q, k, v, o, seg_start, seg_end, seg_states, final, slopes,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            o.stride(0), o.stride(1), seg_states.stride(0), seg_states.stride(1), 0, 0,
            H=heads, DK=dk, DV=dv, BV=bv, C=chunk, REVERSE=reverse, PREC=prec, DOT_F32=dot_f32,
            HAS_STATE=True, STORE_FINAL=False, **meta,
        )  # fmt: skip
    return o, final


def _offsets(batch: int, length: int, cu_seqlens: Tensor | None) -> list[int]:
    if cu_seqlens is not None:
        return [int(x) for x in cu_seqlens.tolist()]
    return [b * length for b in range(batch + 1)]


def _flat(x: Tensor) -> Tensor:
    """``[B, T, H, D]`` -> ``[B*T, H, D]`` with unit stride in D (a view when possible)."""
    x = x.reshape(-1, x.shape[-2], x.shape[-1])
    return x if x.stride(-1) == 1 else x.contiguous()


# ---------------------------------------------------------------------- custom ops
def lightning_fwd_impl(
    q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, initial_state: Tensor | None, cu_seqlens: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The forward launches themselves: what the custom op runs, and what inference calls directly
    (no autograd to record and no graph to trace, so the op's dispatch is pure host overhead)."""
    batch, length, heads, _ = q.shape
    o, final = scan(
        _flat(q),
        _flat(k),
        _flat(v),
        slopes,
        _offsets(batch, length, cu_seqlens),
        initial_state,
        reverse=False,
    )
    return o.view(batch, length, heads, v.shape[-1]), final


@torch.library.custom_op("openm1::lightning_fwd", mutates_args=())
def lightning_fwd(
    q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, initial_state: Tensor | None, cu_seqlens: Tensor | None
) -> tuple[Tensor, Tensor]:
    return lightning_fwd_impl(q, k, v, slopes, initial_state, cu_seqlens)


@lightning_fwd.register_fake
def _(q, k, v, slopes, initial_state, cu_seqlens):
    n = cu_seqlens.shape[0] - 1 if cu_seqlens is not None else q.shape[0]
    o = q.new_empty(*q.shape[:3], v.shape[-1])
    return o, q.new_empty(n, q.shape[2], q.shape[3], v.shape[-1], dtype=torch.float32)


@torch.library.custom_op("openm1::lightning_bwd", mutates_args=())
def lightning_bwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    slopes: Tensor,
    initial_state: Tensor | None,
    cu_seqlens: Tensor | None,
    grad_o: Tensor,
    grad_final: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, length, heads, dim_k = q.shape
    dim_v = v.shape[-1]
    offsets = _offsets(batch, length, cu_seqlens)
    fq, fk, fv, fdo = _flat(q), _flat(k), _flat(v), _flat(grad_o.to(q.dtype))
    inv_lam = torch.exp(slopes.float())[None, :, None, None]
    s0_t = initial_state.transpose(-1, -2) if initial_state is not None else None
    end_t = (grad_final.transpose(-1, -2) * inv_lam) if grad_final is not None else None
    end = (grad_final * inv_lam) if grad_final is not None else None
    grad_q, _ = scan(fdo, fv, fk, slopes, offsets, s0_t, reverse=False)
    grad_k, _ = scan(fv, fdo, fq, slopes, offsets, end_t, reverse=True)
    grad_v, start_state = scan(fk, fq, fdo, slopes, offsets, end, reverse=True)
    d_init = start_state * torch.exp(-slopes.float())[None, :, None, None]
    shape = (batch, length, heads)
    return grad_q.view(*shape, dim_k), grad_k.view(*shape, dim_k), grad_v.view(*shape, dim_v), d_init


@lightning_bwd.register_fake
def _(q, k, v, slopes, initial_state, cu_seqlens, grad_o, grad_final):
    n = cu_seqlens.shape[0] - 1 if cu_seqlens is not None else q.shape[0]
    d_init = q.new_empty(n, q.shape[2], q.shape[3], v.shape[-1], dtype=torch.float32)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), d_init


def _setup_context(ctx, inputs, output):
    q, k, v, slopes, initial_state, cu_seqlens = inputs
    ctx.save_for_backward(q, k, v, slopes, initial_state, cu_seqlens)
    ctx.has_init = initial_state is not None


def _backward(ctx, grad_o, grad_final):
    q, k, v, slopes, initial_state, cu_seqlens = ctx.saved_tensors
    if grad_o is None:
        grad_o = torch.zeros_like(q[..., :1].expand(*q.shape[:3], v.shape[-1]))
    dq, dk, dv, d_init = lightning_bwd(q, k, v, slopes, initial_state, cu_seqlens, grad_o, grad_final)
    return dq, dk, dv, None, (d_init.to(initial_state.dtype) if ctx.has_init else None), None


lightning_fwd.register_autograd(_backward, setup_context=_setup_context)


MAX_GRID_Z = 65535


def _decode_config(n: int, heads: int, dv: int) -> tuple[int, int]:
    """Value-tile width and warps of the decode step; ``OPENM1_LA_DECODE_CONFIG=BV,warps`` overrides."""
    override = os.environ.get("OPENM1_LA_DECODE_CONFIG")
    if override:
        bv, warps = (int(x) for x in override.split(","))
        return min(bv, dv), warps
    # H100 sweeps: 64-wide tiles win from batch 8 up; 8 warps once the states outgrow L2 (batch 64 at
    # 64 heads: 128 MiB of state; bench/results/lightning-sweep-2026-11-23T1640-h100.json).
    return min(dv, 64), (4 if n * heads < 4096 else 8)


def lightning_step_impl(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, state: Tensor) -> Tensor:
    """One token for each of N sequences (``q, k [N, H, Dk]``, ``v [N, H, Dv]``); ``state`` in place."""
    n, heads, dk = q.shape
    dv = v.shape[-1]
    bv, warps = _decode_config(n, heads, dv)
    o = _empty(n, heads, dv, device=q.device, dtype=q.dtype)
    slopes = slopes.to(device=q.device, dtype=torch.float32).contiguous()
    stream = os.environ.get("OPENM1_LA_DECODE_STREAM", "0") == "1"
    for a in range(0, n, MAX_GRID_Z):  # sequences are the grid's last axis, which CUDA caps at 65535
        b = min(a + MAX_GRID_Z, n)
        kernels._decode_step[(triton.cdiv(dv, bv), heads, b - a)](
            q[a:b], k[a:b], v[a:b], o[a:b], state[a:b], slopes,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            o.stride(0), o.stride(1), state.stride(0), state.stride(1),
            DK=dk, DV=dv, BV=bv, STREAM=stream, num_warps=warps,
        )  # fmt: skip
    return o


@torch.library.custom_op("openm1::lightning_step", mutates_args=("state",))
def lightning_step(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, state: Tensor) -> Tensor:
    return lightning_step_impl(q, k, v, slopes, state)


@lightning_step.register_fake
def _(q, k, v, slopes, state):
    return q.new_empty(*q.shape[:2], v.shape[-1])
