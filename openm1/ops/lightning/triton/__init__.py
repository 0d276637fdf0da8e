"""The Triton backend of lightning attention: validated entry points over the custom ops."""

from __future__ import annotations

import torch
from torch import Tensor

from openm1.ops.lightning._checks import check_cu_seqlens, check_qkv, check_state

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_kernel_inputs(q: Tensor, v: Tensor, fn: str) -> None:
    from openm1.ops.lightning.triton.ops import SUPPORTED_DIMS

    for name, dim in (("dim_k (q and k)", q.shape[-1]), ("dim_v (v)", v.shape[-1])):
        if dim not in SUPPORTED_DIMS:
            raise ValueError(
                f"{fn}: the Triton kernels support head dims {SUPPORTED_DIMS}; {name} is {dim}. "
                "Use OPENM1_LIGHTNING_BACKEND=torch for other sizes"
            )
    if q.dtype not in _DTYPES:
        raise ValueError(f"{fn}: the Triton kernels take {_DTYPES}, found {q.dtype}")


def _needs_op(*tensors: Tensor | None) -> bool:
    """Whether to go through the ``torch.library`` op: when autograd records (the op carries the
    backward) or ``torch.compile`` traces (the op keeps the graph whole). Otherwise (inference,
    eager) the launches are called directly: the op's dispatch costs tens of microseconds of host
    time a call, which a host-bound prefill pays on every lightning layer."""
    if torch.compiler.is_compiling() or any(t is not None and type(t) is not Tensor for t in tensors):
        return True  # traced, or a tensor subclass (fake, distributed) that must see the op
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def lightning_attn_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    slopes: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Same contract as :func:`openm1.ops.lightning_attn`, run by the Triton kernels."""
    fn = "lightning_attn"
    dims = check_qkv(q, k, v, slopes, fn)
    _check_kernel_inputs(q, v, fn)
    if cu_seqlens is not None:
        offsets = check_cu_seqlens(cu_seqlens, dims.batch, dims.length, fn)
        n_seq = len(offsets) - 1
    else:
        n_seq = dims.batch
    if initial_state is not None:
        check_state(initial_state, (n_seq, dims.heads, dims.dim_k, dims.dim_v), q.device, "initial_state", fn)
        initial_state = initial_state.float()
    from openm1.ops.lightning.triton.ops import lightning_fwd, lightning_fwd_impl

    fwd = lightning_fwd if _needs_op(q, k, v, initial_state) else lightning_fwd_impl
    o, final = fwd(q, k, v, slopes.float(), initial_state, cu_seqlens)
    return o, (final if output_final_state else None)


def lightning_attn_step_triton(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, state: Tensor) -> Tensor:
    """One decoding step by the Triton kernel; ``state`` (float32, contiguous) is updated in place."""
    fn = "lightning_attn_step"
    squeeze = q.dim() == 4
    if squeeze:
        if q.shape[1] != 1:
            raise ValueError(f"{fn}: q must be [N, H, D] or [N, 1, H, D], found {tuple(q.shape)}")
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
    dims = check_qkv(q[:, None], k[:, None], v[:, None], slopes, fn)
    _check_kernel_inputs(q, v, fn)
    check_state(state, (dims.batch, dims.heads, dims.dim_k, dims.dim_v), q.device, "state", fn)
    if state.dtype != torch.float32 or not state.is_contiguous():
        raise ValueError(f"{fn}: the Triton kernel updates state in place, so it must be contiguous float32")
    from openm1.ops.lightning.triton.ops import lightning_step, lightning_step_impl

    step = lightning_step if _needs_op(q, k, v, state) else lightning_step_impl
    o = step(q, k, v, slopes.float(), state)
    return o[:, None] if squeeze else o
