"""The fused inference kernels against the PyTorch expressions they replace, on fresh random inputs with
poisoned outputs: float32 to rounding, bfloat16 (on a GPU) to a rounding step or two in a few
elements. On the CPU they run under TRITON_INTERPRET=1 (tests/conftest.py), whose bfloat16 casts
truncate, so there bfloat16 is held to 2e-2; on a GPU the same tests run at real sizes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from openm1.ops import fused  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(fused, "POISON_OUTPUTS", True)


def mismatch(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> str:
    """Why ``got`` is not ``want`` to the tolerance of ``dtype``; empty when it is."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"shape/dtype {list(got.shape)} {got.dtype} against {list(want.shape)} {want.dtype}"
    if not torch.isfinite(got).all():
        return "NaN in the kernel's output: an element was never written"
    got, want = got.double().cpu(), want.double().cpu()
    rel = ((got - want).norm() / want.norm()).item()
    if dtype == torch.float32:
        return f"relative error {rel:.3g} >= 1e-6" if rel >= 1e-6 else ""
    if not CUDA:  # Triton's interpreter truncates float32 to bfloat16 where a GPU rounds to nearest
        return f"relative error {rel:.3g} >= 2e-2" if rel >= 2e-2 else ""
    # a float32 ulp before a rounding flips it: one bf16 step, two where a rounded value is rounded
    # again (the norm's weight, the gate)
    far = int(((got - want).abs() > want.abs().clamp_min(1e-30) * 2**-6).sum())
    differ = (got != want).float().mean().item()
    if far or differ >= 0.01:
        return f"{far} elements beyond two bf16 steps, {differ:.2%} differ at all"
    return ""


def randn(*shape: int, dtype: torch.dtype, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(DEVICE, dtype)


SIZES = [(5, 24), (33, 200)] if not CUDA else [(5, 24), (333, 1408), (4096, 2816)]
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "inner"), SIZES)
def test_swiglu_equals_silu_times_up(rows, inner, dtype):
    gate_up = randn(rows, 2 * inner, dtype=dtype, seed=rows, scale=3.0)
    assert not mismatch(fused.swiglu(gate_up), fused.swiglu_reference(gate_up), dtype)
    batched = gate_up.view(1, rows, 2 * inner)
    assert fused.swiglu(batched).shape == (1, rows, inner)


COMBINE = [(7, 40, 2, 4), (30, 72, 1, 3), (19, 64, 3, 8)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("tokens", "dim", "top_k", "experts"), COMBINE)
def test_moe_combine_equals_scatter_then_sum(tokens, dim, top_k, experts, dtype):
    g = torch.Generator().manual_seed(tokens * dim)
    top_i = torch.stack([torch.randperm(experts, generator=g)[:top_k] for _ in range(tokens)]).to(DEVICE)
    order = torch.argsort(top_i.reshape(-1), stable=True)
    weights = torch.softmax(randn(tokens, top_k, dtype=torch.float32, seed=tokens), -1)
    y = randn(tokens * top_k, dim, dtype=dtype, seed=dim)
    want = fused.moe_combine_reference(y, weights, order, top_k)
    assert not mismatch(fused.moe_combine(y, weights, order, top_k), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("alpha", "beta", "postnorm"), [(1.7, 1.0, True), (1.0, 0.6, False), (1, 1, False)])
def test_add_rms_norm_equals_the_residual_then_the_norm(alpha, beta, postnorm, dtype):
    rows, dim = (9, 48) if not CUDA else (1000, 1024)
    a, b = randn(rows, dim, dtype=dtype, seed=1, scale=2.0), randn(rows, dim, dtype=dtype, seed=2)
    weight = randn(dim, dtype=dtype, seed=3)
    x, h = fused.add_rms_norm(a, alpha, b, beta, weight, 1e-5, want_sum=not postnorm)
    want_x, want_h = fused.add_rms_norm_reference(a, alpha, b, beta, weight, 1e-5)
    assert not mismatch(h, want_h, dtype)
    if postnorm:
        assert x is None
    else:
        assert not mismatch(x, want_x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_equals_the_release_norm_on_3d_input(dtype):
    x = randn(2, 7, 40, dtype=dtype, seed=4, scale=5.0)
    weight = randn(40, dtype=dtype, seed=5)
    assert not mismatch(fused.rms_norm(x, weight, 1e-6), fused.rms_norm_reference(x, weight, 1e-6), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_rms_norm_equals_sigmoid_gate_times_the_norm(dtype):
    rows, dim = (6, 64) if not CUDA else (2000, 1024)
    x, gate = (
        randn(rows, dim, dtype=dtype, seed=6, scale=3.0),
        randn(rows, dim, dtype=dtype, seed=7, scale=4.0),
    )
    weight = randn(dim, dtype=dtype, seed=8)
    want = torch.sigmoid(gate) * fused.rms_norm_reference(x, weight, 1e-5)
    assert not mismatch(fused.rms_norm(x, weight, 1e-5, gate=gate), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("alpha", "beta"), [(3.2, 1.0), (1.0, 0.4), (1.0, 1.0)])
def test_scaled_add_equals_the_residual_sum(alpha, beta, dtype):
    a, b = randn(3, 5, 48, dtype=dtype, seed=9), randn(3, 5, 48, dtype=dtype, seed=10, scale=2.0)
    assert not mismatch(
        fused.scaled_add(a, alpha, b, beta),
        fused.add_rms_norm_reference(a, alpha, b, beta, a[0, 0], 1e-6)[0],
        dtype,
    )


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="even"):
        fused.swiglu(torch.zeros(2, 5, device=DEVICE))
    with pytest.raises(ValueError, match="tokens \\* top_k"):
        fused.moe_combine(torch.zeros(4, 8, device=DEVICE), torch.ones(3), torch.arange(4, device=DEVICE), 2)
    with pytest.raises(ValueError, match="weight must have shape"):
        fused.rms_norm(torch.zeros(2, 8, device=DEVICE), torch.ones(4, device=DEVICE), 1e-6)
    with pytest.raises(ValueError, match="a and b must match"):
        fused.add_rms_norm(torch.zeros(2, 8, device=DEVICE), 1.0, torch.zeros(2, 4, device=DEVICE), 1.0,
                           torch.ones(8, device=DEVICE), 1e-6)  # fmt: skip


def test_inference_forms_take_the_kernels_only_on_cuda(monkeypatch):
    cpu = torch.zeros(2)
    assert not fused.fused_available(cpu)
    if CUDA:
        assert fused.fused_available(cpu.cuda())
        monkeypatch.setenv(fused.FUSED_ENV, "0")
        assert not fused.fused_available(cpu.cuda())
