"""Triton kernels for lightning attention (causal linear attention with per-head exponential decay).

One generic scan serves the forward pass and all three gradients (see ``ops.py``): given q', k', v',
a per-head decay ``lam = exp(-slope)`` and an optional initial state, it computes, forwards in time,
``o_t = q_t S_t`` with ``S_t = lam S_{t-1} + k_t^T v_t`` or, with ``REVERSE``, the same recurrence run
from the end of each sequence to its start.

Work is split into *segments* (a few thousand tokens of one sequence) so that the grid fills the GPU
even at batch 1, in three launches:

1. ``_segment_state``: each segment's own state contribution (from a zero state), kept in float32;
2. ``_segment_scan``: per sequence, a running scan over its segments that turns those into the state
   entering each segment (and the final state);
3. ``_segment_output``: each segment again, chunk by chunk: the intra-chunk part ``((Q K^T) * M) V`` on
   tensor cores plus the inter-chunk part ``(Q * decay) S`` from the carried state, which it updates.

q, k and v are each read at most twice and o written once; the only other traffic is one float32 state
per segment (written, scanned, read), a small fraction of the inputs for segments of 1K-4K tokens.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _decay_pow(slope, n):
    """lam ** n = exp(-slope * n) for a float32 tensor of exponents ``n``."""
    return tl.exp(-slope * n)


@triton.jit
def _dot(a, b, PREC: tl.constexpr, DOT_F32: tl.constexpr):
    """``tl.dot``; with ``DOT_F32`` on float32 copies (Triton's CPU interpreter mis-multiplies bf16)."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _advance(
    state, k, v, w, chunk_decay, PREC: tl.constexpr, DOT_F32: tl.constexpr, DECAY_ON_V: tl.constexpr
):
    """The state after one chunk: ``chunk_decay * S + sum_t w_t k_t^T v_t``.

    ``DECAY_ON_V`` computes the sum as ``K^T (w V)``, so k's loaded tile is the product's operand as it
    is; ``(w K)^T V`` scales k in registers and transposes it back through shared memory every chunk
    (7-37% more forward time on an H100)."""
    if DECAY_ON_V:
        update = _dot(tl.trans(k), (v.to(tl.float32) * w[:, None]).to(v.dtype), PREC, DOT_F32)
    else:
        update = _dot(tl.trans((k.to(tl.float32) * w[:, None]).to(v.dtype)), v, PREC, DOT_F32)
    return state * chunk_decay + update


@triton.jit
def _program(H: tl.constexpr, DV: tl.constexpr, BV: tl.constexpr):
    """(segment, head, value tile) of a 1-D grid whose fastest index is the value tile: the programs
    that read the same q and k rows run side by side, so the second read comes from L2."""
    pid = tl.program_id(0)
    n_vb: tl.constexpr = (DV + BV - 1) // BV
    vb = pid % n_vb
    rest = pid // n_vb
    return rest // H, rest % H, vb


@triton.jit
def _segment_state(
    K,
    V,
    SEG_START,
    SEG_END,
    S_OUT,
    SLOPES,
    stride_k_t,
    stride_k_h,
    stride_v_t,
    stride_v_h,
    stride_s_seg,
    stride_s_h,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BV: tl.constexpr,
    C: tl.constexpr,
    REVERSE: tl.constexpr,
    PREC: tl.constexpr,
    DOT_F32: tl.constexpr,
    DECAY_ON_V: tl.constexpr = False,
):
    """S_loc = sum over the segment of decayed k_t^T v_t, decayed to the segment's far end."""
    seg, h, vb = _program(H, DV, BV)
    start = tl.load(SEG_START + seg)
    end = tl.load(SEG_END + seg)
    slope = tl.load(SLOPES + h).to(tl.float32)
    offs_c = tl.arange(0, C)
    offs_k = tl.arange(0, DK)
    offs_v = vb * BV + tl.arange(0, BV)
    mask_v = offs_v < DV
    state = tl.zeros((DK, BV), dtype=tl.float32)
    n_chunks = tl.cdiv(end - start, C)
    for i in range(0, n_chunks):
        if REVERSE:
            ci = n_chunks - 1 - i
        else:
            ci = i
        c0 = start + ci * C
        c_len = tl.minimum(end - c0, C)
        rows = c0 + offs_c
        row_ok = offs_c < c_len
        k = tl.load(
            K + rows[:, None] * stride_k_t + h * stride_k_h + offs_k[None, :], mask=row_ok[:, None], other=0.0
        )
        v = tl.load(
            V + rows[:, None] * stride_v_t + h * stride_v_h + offs_v[None, :],
            mask=row_ok[:, None] & mask_v[None, :],
            other=0.0,
        )
        if REVERSE:
            w = _decay_pow(slope, offs_c.to(tl.float32))
        else:
            w = _decay_pow(slope, (c_len - 1 - offs_c).to(tl.float32))
        w = tl.where(row_ok, w, 0.0)
        state = _advance(state, k, v, w, _decay_pow(slope, c_len.to(tl.float32)), PREC, DOT_F32, DECAY_ON_V)
    s_ptr = S_OUT + seg * stride_s_seg + h * stride_s_h + offs_k[:, None] * DV + offs_v[None, :]
    tl.store(s_ptr, state, mask=mask_v[None, :])


@triton.jit
def _segment_scan(
    S_SEG,
    SEQ_SEG_BEGIN,
    SEG_LEN,
    INIT,
    FINAL,
    SLOPES,
    stride_s_seg,
    stride_s_h,
    stride_i_n,
    stride_i_h,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_INIT: tl.constexpr,
    STORE_FINAL: tl.constexpr,
):
    """Per sequence: replace each segment's own state with the state entering it (in place)."""
    n = tl.program_id(0)
    h = tl.program_id(1)
    tile = tl.program_id(2)
    n_vb = tl.cdiv(DV, BV)
    offs_k = (tile // n_vb) * BK + tl.arange(0, BK)
    offs_v = (tile % n_vb) * BV + tl.arange(0, BV)
    mask = (offs_k[:, None] < DK) & (offs_v[None, :] < DV)
    tile_off = offs_k[:, None] * DV + offs_v[None, :]
    slope = tl.load(SLOPES + h).to(tl.float32)
    if HAS_INIT:
        state = tl.load(INIT + n * stride_i_n + h * stride_i_h + tile_off, mask=mask, other=0.0).to(
            tl.float32
        )
    else:
        state = tl.zeros((BK, BV), dtype=tl.float32)
    first = tl.load(SEQ_SEG_BEGIN + n)
    last = tl.load(SEQ_SEG_BEGIN + n + 1)
    for i in range(0, last - first):
        if REVERSE:
            seg = last - 1 - i
        else:
            seg = first + i
        ptr = S_SEG + seg * stride_s_seg + h * stride_s_h + tile_off
        own = tl.load(ptr, mask=mask, other=0.0)
        tl.store(ptr, state, mask=mask)
        length = tl.load(SEG_LEN + seg).to(tl.float32)
        state = state * _decay_pow(slope, length) + own
    if STORE_FINAL:
        tl.store(FINAL + n * stride_i_n + h * stride_i_h + tile_off, state, mask=mask)


@triton.jit
def _segment_output(
    Q,
    K,
    V,
    OUT,
    SEG_START,
    SEG_END,
    S_IN,
    FINAL,
    SLOPES,
    stride_q_t,
    stride_q_h,
    stride_k_t,
    stride_k_h,
    stride_v_t,
    stride_v_h,
    stride_o_t,
    stride_o_h,
    stride_s_seg,
    stride_s_h,
    stride_f_n,
    stride_f_h,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BV: tl.constexpr,
    C: tl.constexpr,
    REVERSE: tl.constexpr,
    PREC: tl.constexpr,
    DOT_F32: tl.constexpr,
    HAS_STATE: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    DECAY_ON_V: tl.constexpr = False,
):
    """The outputs of one segment, chunk by chunk, from the state entering it.

    In the single-pass mode (one segment per sequence, when the grid is full without splitting) the
    entering state is the initial state (``HAS_STATE``) or zero, and the state left at the end is the
    sequence's final state (``STORE_FINAL``), so the state and scan launches are skipped."""
    seg, h, vb = _program(H, DV, BV)
    start = tl.load(SEG_START + seg)
    end = tl.load(SEG_END + seg)
    slope = tl.load(SLOPES + h).to(tl.float32)
    offs_c = tl.arange(0, C)
    offs_k = tl.arange(0, DK)
    offs_v = vb * BV + tl.arange(0, BV)
    mask_v = offs_v < DV
    tile = offs_k[:, None] * DV + offs_v[None, :]
    if HAS_STATE:
        s_in = S_IN + seg * stride_s_seg + h * stride_s_h + tile
        state = tl.load(s_in, mask=mask_v[None, :], other=0.0).to(tl.float32)
    else:
        state = tl.zeros((DK, BV), dtype=tl.float32)
    # Within-chunk decay mask (depends only on the offsets, so it is built once).
    if REVERSE:
        diff = offs_c[None, :] - offs_c[:, None]
    else:
        diff = offs_c[:, None] - offs_c[None, :]
    intra_decay = tl.where(diff >= 0, _decay_pow(slope, tl.maximum(diff, 0).to(tl.float32)), 0.0)
    n_chunks = tl.cdiv(end - start, C)
    for i in range(0, n_chunks):
        if REVERSE:
            ci = n_chunks - 1 - i
        else:
            ci = i
        c0 = start + ci * C
        c_len = tl.minimum(end - c0, C)
        rows = c0 + offs_c
        row_ok = offs_c < c_len
        q = tl.load(
            Q + rows[:, None] * stride_q_t + h * stride_q_h + offs_k[None, :], mask=row_ok[:, None], other=0.0
        )
        k = tl.load(
            K + rows[:, None] * stride_k_t + h * stride_k_h + offs_k[None, :], mask=row_ok[:, None], other=0.0
        )
        v = tl.load(
            V + rows[:, None] * stride_v_t + h * stride_v_h + offs_v[None, :],
            mask=row_ok[:, None] & mask_v[None, :],
            other=0.0,
        )
        pos = offs_c.to(tl.float32)
        if REVERSE:
            q_decay = _decay_pow(slope, c_len.to(tl.float32) - pos)
            k_decay = _decay_pow(slope, pos)
        else:
            q_decay = _decay_pow(slope, pos + 1.0)
            k_decay = _decay_pow(slope, c_len.to(tl.float32) - 1.0 - pos)
        q_decay = tl.where(row_ok, q_decay, 0.0)
        k_decay = tl.where(row_ok, k_decay, 0.0)

        scores = _dot(q, tl.trans(k), PREC, DOT_F32) * intra_decay
        out = _dot(scores.to(v.dtype), v, PREC, DOT_F32)
        out += _dot(q, state.to(q.dtype), PREC, DOT_F32) * q_decay[:, None]
        tl.store(
            OUT + rows[:, None] * stride_o_t + h * stride_o_h + offs_v[None, :],
            out.to(OUT.dtype.element_ty),
            mask=row_ok[:, None] & mask_v[None, :],
        )
        state = _advance(
            state, k, v, k_decay, _decay_pow(slope, c_len.to(tl.float32)), PREC, DOT_F32, DECAY_ON_V
        )
    if STORE_FINAL:
        tl.store(FINAL + seg * stride_f_n + h * stride_f_h + tile, state, mask=mask_v[None, :])


@triton.jit
def _decode_step(
    Q,
    K,
    V,
    OUT,
    STATE,
    SLOPES,
    stride_q_n,
    stride_q_h,
    stride_k_n,
    stride_k_h,
    stride_v_n,
    stride_v_h,
    stride_o_n,
    stride_o_h,
    stride_s_n,
    stride_s_h,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BV: tl.constexpr,
    STREAM: tl.constexpr,
):
    """One token per sequence: ``S = lam S + k^T v`` in place, ``o = q S``; bandwidth-bound on S.

    The grid is (value tiles, heads, sequences), so programs launched together walk the states in
    memory order: 3-6% faster at batch 64-256 than sequences first (an H100 sweep,
    bench/results/lightning-sweep-2026-11-23T1910-h100.json).
    """
    vb = tl.program_id(0)
    h = tl.program_id(1)
    n = tl.program_id(2)
    offs_k = tl.arange(0, DK)
    offs_v = vb * BV + tl.arange(0, BV)
    mask_v = offs_v < DV
    q = tl.load(Q + n * stride_q_n + h * stride_q_h + offs_k).to(tl.float32)
    k = tl.load(K + n * stride_k_n + h * stride_k_h + offs_k).to(tl.float32)
    v = tl.load(V + n * stride_v_n + h * stride_v_h + offs_v, mask=mask_v, other=0.0).to(tl.float32)
    s_ptr = STATE + n * stride_s_n + h * stride_s_h + offs_k[:, None] * DV + offs_v[None, :]
    if STREAM:  # each state byte is touched once per step: keep it from displacing others in L2
        state = tl.load(s_ptr, mask=mask_v[None, :], other=0.0, eviction_policy="evict_first")
    else:
        state = tl.load(s_ptr, mask=mask_v[None, :], other=0.0)
    lam = tl.exp(-tl.load(SLOPES + h).to(tl.float32))
    state = state * lam + k[:, None] * v[None, :]
    if STREAM:
        tl.store(s_ptr, state, mask=mask_v[None, :], cache_modifier=".cs")
    else:
        tl.store(s_ptr, state, mask=mask_v[None, :])
    out = tl.sum(q[:, None] * state, axis=0)
    tl.store(OUT + n * stride_o_n + h * stride_o_h + offs_v, out.to(OUT.dtype.element_ty), mask=mask_v)
