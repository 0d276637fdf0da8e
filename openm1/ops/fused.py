"""Fused pointwise kernels for the engine's inference forms: SwiGLU, MoE combine, residual + RMSNorm.

A prefill of 32K tokens on the anchor model spent a fifth of its kernel time in PyTorch's strided
elementwise kernels: SiLU and the product over halves of the experts' gate/up output, the routing
weight, the scatter back to token order and the sum over the top-k, the residual scaling and add, and
the RMSNorm weight. Each kernel here is one pass over its data that rounds where the PyTorch
expression it replaces rounds (to the input dtype after every operation the model writes), so the
engine's numbers stay those of the model up to float32 rounding inside a row.

The Triton kernels run on CUDA (and under ``TRITON_INTERPRET=1`` in the tests); :func:`fused_available`
says when the inference forms should take them, and ``OPENM1_FUSED_INFERENCE=0`` turns them off (the
PyTorch expressions then run, for comparisons).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from openm1.model.norm import rms_norm as rms_norm_reference

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU install: the PyTorch expressions only
    triton = None

__all__ = [
    "FUSED_ENV",
    "add_rms_norm",
    "add_rms_norm_reference",
    "fused_available",
    "moe_combine",
    "moe_combine_reference",
    "rms_norm",
    "rms_norm_reference",
    "scaled_add",
    "scaled_add_reference",
    "swiglu",
    "swiglu_reference",
]

FUSED_ENV = "OPENM1_FUSED_INFERENCE"
POISON_OUTPUTS = False
"""Tests set this: outputs start as NaN, so an element a kernel forgets to write fails the comparison."""


def fused_available(x: torch.Tensor) -> bool:
    """Whether the inference forms should use the Triton kernels for ``x``."""
    return triton is not None and x.is_cuda and os.environ.get(FUSED_ENV, "1") != "0"


def _empty(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    out = torch.empty(shape, device=like.device, dtype=like.dtype)
    return out.fill_(float("nan")) if POISON_OUTPUTS else out


def _rows(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.stride(-1) != 1:
        x = x.contiguous()
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [rows, features], got shape {list(x.shape)}")
    return x


# ---------------------------------------------------------------------- references
def swiglu_reference(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` over the two halves of the last dimension, as the experts compute it."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def moe_combine_reference(
    y: torch.Tensor, weights: torch.Tensor, order: torch.Tensor, top_k: int
) -> torch.Tensor:
    """Expert outputs ``y`` (rows sorted by expert: row ``i`` is slot ``order[i]``) times their routing
    weights, back in token order, summed over each token's ``top_k`` slots."""
    scaled = y * weights.reshape(-1)[order, None].to(y.dtype)
    out = torch.empty_like(scaled).index_copy_(0, order, scaled)
    return out.view(-1, top_k, y.shape[-1]).sum(1)


def scaled_add_reference(a: torch.Tensor, alpha: float, b: torch.Tensor, beta: float) -> torch.Tensor:
    """``a * alpha + b * beta``, skipping multiplications by 1 (exact: the same numbers, fewer kernels)."""
    return (a * alpha if alpha != 1 else a) + (b * beta if beta != 1 else b)


def add_rms_norm_reference(
    a: torch.Tensor, alpha: float, b: torch.Tensor, beta: float, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x = a * alpha + b * beta`` (the decoder layer's residual) and ``rms_norm(x)``."""
    x = scaled_add_reference(a, alpha, b, beta)
    return x, rms_norm_reference(x, weight, eps)


# ---------------------------------------------------------------------- kernels
if triton is not None:

    @triton.jit
    def _swiglu_kernel(x_ptr, out_ptr, stride_x, stride_out, inner, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < inner
        gate = tl.load(x_ptr + row * stride_x + cols, mask=keep, other=0.0)
        up = tl.load(x_ptr + row * stride_x + inner + cols, mask=keep, other=0.0)
        g = gate.to(tl.float32)
        silu = (g / (1.0 + tl.exp(-g))).to(gate.dtype)  # F.silu rounds to the input dtype
        out = (silu.to(tl.float32) * up.to(tl.float32)).to(gate.dtype)
        tl.store(out_ptr + row * stride_out + cols, out, mask=keep)

    @triton.jit
    def _combine_kernel(y_ptr, w_ptr, slot_row_ptr, out_ptr, dim, TOP_K: tl.constexpr, BLOCK: tl.constexpr):
        token = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < dim
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for j in tl.static_range(TOP_K):
            row = tl.load(slot_row_ptr + token * TOP_K + j).to(tl.int64)
            y = tl.load(y_ptr + row * dim + cols, mask=keep, other=0.0)
            w = tl.load(w_ptr + token * TOP_K + j).to(y.dtype).to(tl.float32)
            acc += (y.to(tl.float32) * w).to(y.dtype).to(tl.float32)  # each product rounded, as y * w
        tl.store(out_ptr + token * dim + cols, acc.to(out_ptr.dtype.element_ty), mask=keep)

    @triton.jit
    def _add_rms_norm_kernel(
        a_ptr, b_ptr, w_ptr, g_ptr, x_ptr, h_ptr, stride_a, stride_b, stride_g, dim, alpha, beta, eps,
        HAS_B: tl.constexpr, SCALE_A: tl.constexpr, SCALE_B: tl.constexpr, WRITE_X: tl.constexpr,
        NORM: tl.constexpr, GATE: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        keep = cols < dim
        a = tl.load(a_ptr + row * stride_a + cols, mask=keep, other=0.0)
        x = a
        if SCALE_A:
            x = (a.to(tl.float32) * alpha).to(a.dtype)
        if HAS_B:
            b = tl.load(b_ptr + row * stride_b + cols, mask=keep, other=0.0)
            if SCALE_B:
                b = (b.to(tl.float32) * beta).to(a.dtype)
            x = (x.to(tl.float32) + b.to(tl.float32)).to(a.dtype)
        if WRITE_X:
            tl.store(x_ptr + row * dim + cols, x, mask=keep)
        if NORM:
            x32 = x.to(tl.float32)
            rstd = 1.0 / tl.sqrt(tl.sum(x32 * x32, axis=0) / dim + eps)
            normed = (x32 * rstd).to(a.dtype)
            w = tl.load(w_ptr + cols, mask=keep, other=0.0).to(a.dtype)
            h = (normed.to(tl.float32) * w.to(tl.float32)).to(a.dtype)
            if GATE:  # sigmoid(gate) * h, each rounded as torch.sigmoid(g) * h rounds
                g = tl.load(g_ptr + row * stride_g + cols, mask=keep, other=0.0).to(tl.float32)
                s = (1.0 / (1.0 + tl.exp(-g))).to(a.dtype)
                h = (s.to(tl.float32) * h.to(tl.float32)).to(a.dtype)
            tl.store(h_ptr + row * dim + cols, h, mask=keep)


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """:func:`swiglu_reference` in one pass: ``[rows, 2 * inner]`` to ``[rows, inner]``."""
    x = _rows(gate_up.reshape(-1, gate_up.shape[-1]), "gate_up")
    if x.shape[-1] % 2:
        raise ValueError(f"gate_up's last dimension must be even (gate, up), got {x.shape[-1]}")
    inner = x.shape[-1] // 2
    out = _empty((x.shape[0], inner), x)
    if x.shape[0]:
        block = min(1024, triton.next_power_of_2(inner))
        grid = (x.shape[0], triton.cdiv(inner, block))
        _swiglu_kernel[grid](x, out, x.stride(0), out.stride(0), inner, BLOCK=block)
    return out.view(*gate_up.shape[:-1], inner)


def moe_combine(y: torch.Tensor, weights: torch.Tensor, order: torch.Tensor, top_k: int) -> torch.Tensor:
    """:func:`moe_combine_reference` in one pass (a gather per token instead of a scatter)."""
    y = _rows(y, "y")
    slots = order.numel()
    if weights.numel() != slots or y.shape[0] != slots or slots % top_k:
        raise ValueError(
            f"y has {y.shape[0]} rows, weights {weights.numel()} and order {slots}; all must be "
            f"tokens * top_k (top_k = {top_k})"
        )
    # the sorted row of each (token, slot): the inverse of ``order``
    slot_row = torch.empty_like(order).scatter_(0, order, torch.arange(slots, device=order.device))
    tokens, dim = slots // top_k, y.shape[-1]
    out = _empty((tokens, dim), y)
    if tokens:
        block = min(1024, triton.next_power_of_2(dim))
        grid = (tokens, triton.cdiv(dim, block))
        _combine_kernel[grid](y, weights.contiguous(), slot_row, out, dim, TOP_K=top_k, BLOCK=block)
    return out


def _launch(
    a: torch.Tensor, alpha: float, b: torch.Tensor | None, beta: float, weight: torch.Tensor | None,
    eps: float, gate: torch.Tensor | None, want_sum: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
    """One pass over rows: the scaled sum (kept if ``want_sum``), then its norm (if ``weight``)."""
    shape = a.shape
    dim = shape[-1]
    a2 = _rows(a.reshape(-1, dim), "a")
    for name, other in (("b", b), ("gate", gate)):
        if other is not None and (other.shape != shape or other.dtype != a.dtype):
            raise ValueError(
                f"a and {name} must match: {list(shape)} {a.dtype} against {list(other.shape)} {other.dtype}"
            )
    b2 = _rows(b.reshape(-1, dim), "b") if b is not None else a2
    g2 = _rows(gate.reshape(-1, dim), "gate") if gate is not None else a2
    if weight is not None and weight.shape != (dim,):
        raise ValueError(f"weight must have shape [{dim}], got {list(weight.shape)}")
    h = _empty(a2.shape, a2) if weight is not None else None
    x = _empty(a2.shape, a2) if want_sum else None
    if a2.shape[0]:
        block = triton.next_power_of_2(dim)
        _add_rms_norm_kernel[(a2.shape[0],)](
            a2, b2, weight if weight is not None else a2, g2, x if x is not None else a2,
            h if h is not None else a2, a2.stride(0), b2.stride(0), g2.stride(0), dim, float(alpha),
            float(beta), float(eps), HAS_B=b is not None, SCALE_A=alpha != 1, SCALE_B=beta != 1,
            WRITE_X=want_sum, NORM=weight is not None, GATE=gate is not None, BLOCK=block,
            num_warps=4 if block <= 2048 else 8,
        )  # fmt: skip
    return (x.view(shape) if x is not None else None), (h.view(shape) if h is not None else None)


def add_rms_norm(
    a: torch.Tensor,
    alpha: float,
    b: torch.Tensor | None,
    beta: float,
    weight: torch.Tensor,
    eps: float,
    want_sum: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """:func:`add_rms_norm_reference` in one pass; ``b=None`` normalises ``a * alpha``. Returns
    ``(x, rms_norm(x))``, ``x`` None unless ``want_sum``."""
    return _launch(a, alpha, b, beta, weight, eps, None, want_sum)  # type: ignore[return-value]


def scaled_add(a: torch.Tensor, alpha: float, b: torch.Tensor, beta: float) -> torch.Tensor:
    """``a * alpha + b * beta`` in one pass, rounded as the two products and the sum round."""
    return _launch(a, alpha, b, beta, None, 0.0, None, True)[0]  # type: ignore[return-value]


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, gate: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`rms_norm_reference` in one pass, times ``sigmoid(gate)`` when a gate is given."""
    return _launch(x, 1.0, None, 1.0, weight, eps, gate, False)[1]  # type: ignore[return-value]
