"""Inference forms of the model's layers, swapped in by the engine for its own forwards only.

The reference layers are written for training and clarity; decoding and prefill pay for that in
kernel launches and host syncs. Inside :func:`inference_forms` (and nowhere else, so a trainer sharing
the model is untouched):

* the MoE layer skips the load-balancing statistics (inference reads no router loss; it reads 0) and
  takes the renormalised top-k weights as the softmax of the top-k router logits;
* the experts run without reading expert counts on the host: ``grouped`` (one ``torch._grouped_mm``
  per projection over the tokens sorted by expert; bf16 on Hopper or newer, or on the CPU), ``dense``
  (every expert on every token, weighted by the routing: right for tiny decode batches) or
  ``reference`` (the model's own per-expert loop);
* RMSNorm computes its float32 statistics with ``F.rms_norm``, then applies the weight in the input
  dtype, as the release does; on CUDA one Triton kernel (``openm1.ops.fused``) does both, and the
  decoder layer's residual sum joins the post-attention norm's kernel;
* on CUDA the experts' SiLU-and-product and the combine (routing weight, token order, top-k sum) are
  one Triton kernel each, rounding where the PyTorch expressions round;
* the decoder layer skips its residual multiplications by 1 (the release's beta factors).

Every form computes the same function as the model's layer, up to float32 rounding (tests compare).
"""

from __future__ import annotations

import types
from contextlib import contextmanager
from functools import cache

import torch
import torch.nn.functional as F

from openm1.model.block import DecoderLayer
from openm1.model.lightning import LightningAttention
from openm1.model.moe import Experts, RouterStats, SparseMoE
from openm1.model.norm import RMSNorm
from openm1.ops.fused import (
    add_rms_norm,
    fused_available,
    moe_combine,
    moe_combine_reference,
    rms_norm,
    scaled_add,
    scaled_add_reference,
    swiglu,
    swiglu_reference,
)

EXPERT_FORMS = ("auto", "grouped", "dense", "reference")


# ---------------------------------------------------------------------- experts
def grouped_experts_forward(
    self: Experts, x: torch.Tensor, top_w: torch.Tensor, top_i: torch.Tensor
) -> torch.Tensor:
    """Tokens sorted by expert, each projection one grouped matmul: no host sync, fixed launch count."""
    num_tokens, top_k = top_i.shape
    flat = top_i.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.zeros(self.num_experts, dtype=torch.int32, device=x.device)
    counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))  # bincount would sync on CUDA
    offsets = torch.cumsum(counts, 0, dtype=torch.int32)
    xs = x.index_select(0, order // top_k)
    gate_up = torch._grouped_mm(xs, self.gate_up_proj.transpose(1, 2), offs=offsets)
    fused = fused_available(gate_up)
    act = swiglu(gate_up) if fused else swiglu_reference(gate_up)
    y = torch._grouped_mm(act, self.down_proj.transpose(1, 2), offs=offsets)
    # weighted, back in (token, slot) order, the top-k outputs of each token summed as the reference does
    return (moe_combine if fused else moe_combine_reference)(y, top_w, order, top_k)


def dense_experts_forward(
    self: Experts, x: torch.Tensor, top_w: torch.Tensor, top_i: torch.Tensor
) -> torch.Tensor:
    """Every expert on every token, weighted by the (renormalised top-k) routing: no data-dependent shapes."""
    combine = torch.zeros(x.shape[0], self.num_experts, device=x.device, dtype=x.dtype)
    combine.scatter_(1, top_i, top_w.to(x.dtype))
    gate_up = torch.einsum("th,eoh->eto", x, self.gate_up_proj)
    act = swiglu(gate_up) if fused_available(gate_up) else swiglu_reference(gate_up)
    y = torch.einsum("eti,ehi->eth", act, self.down_proj)
    return torch.einsum("eth,te->th", y, combine)


@cache
def grouped_mm_supported(device_type: str, dtype: torch.dtype, capability: tuple[int, int] | None) -> bool:
    """Whether ``torch._grouped_mm`` runs here: bf16 on CUDA compute capability 9.0+, or the CPU."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if device_type == "cuda":
        return dtype == torch.bfloat16 and capability is not None and capability >= (9, 0)
    if device_type != "cpu":
        return False
    try:  # the CPU fallback arrived later than the CUDA kernels
        a, b = torch.ones(2, 8, dtype=dtype), torch.ones(2, 8, 8, dtype=dtype).transpose(1, 2)
        torch._grouped_mm(a, b, offs=torch.tensor([1, 2], dtype=torch.int32))
        return True
    except (RuntimeError, NotImplementedError):
        return False


def resolve_expert_form(form: str, device: torch.device, dtype: torch.dtype, decode: bool = False) -> str:
    """``auto``: grouped where it runs on a GPU, else dense for a decode graph and the reference otherwise."""
    if form not in EXPERT_FORMS:
        raise ValueError(f"unknown experts form {form!r}; use one of {EXPERT_FORMS}")
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    grouped_ok = grouped_mm_supported(device.type, dtype, cap)
    if form == "grouped" and not grouped_ok:
        raise ValueError(
            f"the grouped experts form needs torch._grouped_mm for {dtype} on {device.type} (bf16 on a "
            "compute capability 9.0+ GPU, or the CPU with a recent torch); use 'dense' or 'reference'"
        )
    if form != "auto":
        return form
    if device.type == "cuda" and grouped_ok:
        return "grouped"
    return "dense" if decode else "reference"


_EXPERT_FORWARD = {"grouped": grouped_experts_forward, "dense": dense_experts_forward}


# ---------------------------------------------------------------------- MoE and norm
def moe_forward_without_stats(
    self: SparseMoE, hidden: torch.Tensor, token_mask: torch.Tensor | None
) -> tuple[torch.Tensor, RouterStats]:
    """The MoE output without the load-balancing statistics (constant stats that make the loss 0).

    The router's renormalised top-k weights are the softmax of the top-k float32 logits (the same
    numbers as softmax, top-k, divide by their sum, in two kernels instead of four).
    """
    shape = hidden.shape
    x = hidden.reshape(-1, shape[-1])
    logits = F.linear(x.float(), self.gate.weight.float())
    top_logits, top_i = torch.topk(logits, self.gate.top_k, dim=-1)
    out = self.experts(x, torch.softmax(top_logits, dim=-1), top_i).reshape(shape)
    stats = self.__dict__.get("_openm1_null_stats")
    if stats is None or stats.rows.device != hidden.device:
        zeros = torch.zeros(self.num_experts, device=hidden.device)
        stats = RouterStats(zeros, zeros, torch.ones((), device=hidden.device))
        self.__dict__["_openm1_null_stats"] = stats
    return out, stats


def fused_rms_norm_forward(self: RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """RMSNorm in one fused kernel (float32 statistics, one rounding to the input dtype, as the release
    computes it), then the weight in the input dtype."""
    if x.dtype == torch.float64:  # the release takes float32 statistics even of float64 input
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).to(x.dtype)
    if fused_available(x) and self.weight.dtype == x.dtype:
        return rms_norm(x, self.weight, self.eps)  # statistics, rounding and weight in one kernel
    return self.weight * F.rms_norm(x, (x.shape[-1],), None, self.eps)


def decoder_layer_forward(self: DecoderLayer, x: torch.Tensor, ctx) -> tuple[torch.Tensor, RouterStats]:  # noqa: ANN001
    """The decoder layer's residual scheme (see openm1.model.block) without multiplications by 1."""
    h = self.input_layernorm(x)
    residual = h if self.postnorm else x
    attn = self.self_attn(h, ctx)
    norm = self.post_attention_layernorm
    if fused_available(attn) and attn.dtype == residual.dtype == norm.weight.dtype != torch.float64:
        # the residual sum and the norm in one kernel; postnorm keeps only the normed sum
        x, h = add_rms_norm(residual, self.attn_alpha, attn, self.attn_beta, norm.weight, norm.eps,
                            want_sum=not self.postnorm)  # fmt: skip
    else:
        x = scaled_add_reference(residual, self.attn_alpha, attn, self.attn_beta)
        h = norm(x)
    residual = h if self.postnorm else x
    moe_out, stats = self.mlp(h, ctx.token_mask)
    if fused_available(moe_out) and moe_out.dtype == residual.dtype != torch.float64:
        return scaled_add(residual, self.mlp_alpha, moe_out, self.mlp_beta), stats
    return scaled_add_reference(residual, self.mlp_alpha, moe_out, self.mlp_beta), stats


def fused_gated_norm_forward(
    self: LightningAttention, out: torch.Tensor, hidden: torch.Tensor
) -> torch.Tensor:
    """The lightning layer's norm and sigmoid gate in one kernel on CUDA (the model's method elsewhere)."""
    gate = self.output_gate(hidden)
    norm = self.norm
    if fused_available(out) and out.dtype == gate.dtype == norm.weight.dtype != torch.float64:
        return rms_norm(out, norm.weight, norm.eps, gate=gate)
    return torch.sigmoid(gate) * norm(out)


class InferenceForms:
    """A reusable context manager: ``with forms:`` swaps the inference forms in, and out after.

    ``experts`` is a resolved form (see :func:`resolve_expert_form`); the module lists are found once.
    """

    def __init__(self, model: torch.nn.Module, experts: str = "reference") -> None:
        if experts not in _EXPERT_FORWARD and experts != "reference":
            raise ValueError(f"experts must be one of grouped, dense, reference; got {experts!r}")
        self.experts = experts
        forms = {
            SparseMoE: ("forward", moe_forward_without_stats),
            RMSNorm: ("forward", fused_rms_norm_forward),
            DecoderLayer: ("forward", decoder_layer_forward),
            LightningAttention: ("gated_norm", fused_gated_norm_forward),
        }
        if experts in _EXPERT_FORWARD:
            forms[Experts] = ("forward", _EXPERT_FORWARD[experts])
        mods = list(model.modules())
        self._swaps = [(m, *form) for kind, form in forms.items() for m in mods if isinstance(m, kind)]
        self._depth = 0

    def __enter__(self) -> InferenceForms:
        if self._depth == 0:
            for m, name, method in self._swaps:
                setattr(m, name, types.MethodType(method, m))
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            for m, name, _ in self._swaps:
                delattr(m, name)


@contextmanager
def swapped_experts(model: torch.nn.Module, experts: str):
    """Only the experts' form (``dense`` or ``grouped``), e.g. to compare it with the reference."""
    mods = [m for m in model.modules() if isinstance(m, Experts)]
    for m in mods:
        m.forward = types.MethodType(_EXPERT_FORWARD[experts], m)
    try:
        yield
    finally:
        for m in mods:
            del m.forward
