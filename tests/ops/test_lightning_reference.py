"""The PyTorch lightning-attention forms agree with a float64 token-by-token reference."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from openm1.ops import lightning_attn, lightning_attn_step, lightning_decay_slopes
from openm1.ops.lightning import (
    BACKEND_ENV,
    lightning_attn_chunked,
    lightning_attn_quadratic,
    lightning_attn_recurrent,
    resolve_backend,
)

HEADS = 8


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def make_inputs(seed: int, batch: int, length: int, dim_k: int = 16, dim_v: int = 16, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, length, HEADS, dim_k, generator=g) * 0.5
    k = torch.randn(batch, length, HEADS, dim_k, generator=g) * 0.5
    v = torch.randn(batch, length, HEADS, dim_v, generator=g) * 0.5
    state = torch.randn(batch, HEADS, dim_k, dim_v, generator=g) * 0.5
    return q.to(dtype), k.to(dtype), v.to(dtype), state


def reference(q, k, v, slopes, state=None):
    """Float64 recurrence on the (possibly rounded) inputs."""
    s0 = state.double() if state is not None else None
    return lightning_attn_recurrent(q.double(), k.double(), v.double(), slopes.double(), s0)


SLOPES = lightning_decay_slopes(HEADS, 0, 4)  # 0.5 ... 0.004: both fast and slow heads


@pytest.mark.parametrize("length", [1, 7, 63, 64, 65, 200])
@pytest.mark.parametrize("block_size", [16, 64, 256])
def test_forms_agree_with_reference(length: int, block_size: int) -> None:
    q, k, v, s0 = make_inputs(length * 1000 + block_size, 2, length)
    ref_o, ref_s = reference(q, k, v, SLOPES, s0)
    o, s = lightning_attn_chunked(q, k, v, SLOPES, s0, output_final_state=True, block_size=block_size)
    assert o.shape == q.shape and o.dtype == torch.float32 and s.dtype == torch.float32
    assert rel(o, ref_o) < 1e-5 and rel(s, ref_s) < 1e-5
    qo, qs = lightning_attn_quadratic(q, k, v, SLOPES, s0)
    assert rel(qo, ref_o) < 1e-5 and rel(qs, ref_s) < 1e-5
    # Without an initial state (the zeros fast path) and without asking for the state.
    ref_o0, _ = reference(q, k, v, SLOPES)
    o0, none = lightning_attn_chunked(q, k, v, SLOPES, block_size=block_size)
    assert none is None and rel(o0, ref_o0) < 1e-5


def test_float64_is_exact_and_stays_float64() -> None:
    q, k, v, s0 = (x.double() for x in make_inputs(1, 2, 77))
    ref_o, ref_s = reference(q, k, v, SLOPES, s0)
    o, s = lightning_attn_chunked(q, k, v, SLOPES, s0, output_final_state=True, block_size=16)
    assert o.dtype == s.dtype == torch.float64
    assert rel(o, ref_o) < 1e-12 and rel(s, ref_s) < 1e-12


def test_dim_k_differs_from_dim_v() -> None:
    q, k, v, s0 = make_inputs(2, 2, 70, dim_k=12, dim_v=20)
    ref_o, ref_s = reference(q, k, v, SLOPES, s0)
    o, s = lightning_attn(q, k, v, SLOPES, s0, output_final_state=True)
    assert o.shape == (2, 70, HEADS, 20) and s.shape == (2, HEADS, 12, 20)
    assert rel(o, ref_o) < 1e-5 and rel(s, ref_s) < 1e-5
    qo, _ = lightning_attn_quadratic(q, k, v, SLOPES, s0)
    assert rel(qo, ref_o) < 1e-5


def test_bf16_inputs() -> None:
    q, k, v, s0 = make_inputs(3, 2, 130, dtype=torch.bfloat16)
    ref_o, ref_s = reference(q, k, v, SLOPES, s0)
    o, s = lightning_attn(q, k, v, SLOPES, s0, output_final_state=True)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32 and o.is_contiguous()
    assert rel(o, ref_o) < 1e-2 and rel(s, ref_s) < 1e-5  # the state never goes through bf16


def test_packed_sequences_match_separate_runs() -> None:
    lengths = [1, 65, 7, 130, 64]
    total = sum(lengths)
    q, k, v, _ = make_inputs(4, 1, total)
    s0 = torch.randn(len(lengths), HEADS, 16, 16, generator=torch.Generator().manual_seed(5)) * 0.5
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    o, s = lightning_attn(q, k, v, SLOPES, s0, output_final_state=True, cu_seqlens=cu)
    assert o.shape == q.shape and s.shape == (len(lengths), HEADS, 16, 16)
    for n, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        sep_o, sep_s = lightning_attn(q[:, a:b], k[:, a:b], v[:, a:b], SLOPES, s0[n : n + 1], True)
        torch.testing.assert_close(o[:, a:b], sep_o)
        torch.testing.assert_close(s[n : n + 1], sep_s)
        ref_o, ref_s = reference(q[:, a:b], k[:, a:b], v[:, a:b], SLOPES, s0[n : n + 1])
        assert rel(o[:, a:b], ref_o) < 1e-5 and rel(s[n : n + 1], ref_s) < 1e-5


def test_packed_empty_sequence_keeps_its_state() -> None:
    q, k, v, _ = make_inputs(6, 1, 10)
    s0 = torch.randn(3, HEADS, 16, 16)
    cu = torch.tensor([0, 4, 4, 10])
    o, s = lightning_attn(q, k, v, SLOPES, s0, output_final_state=True, cu_seqlens=cu)
    torch.testing.assert_close(s[1], s0[1])
    _, s_none = lightning_attn(q, k, v, SLOPES, output_final_state=True, cu_seqlens=cu)
    assert s_none.shape == (3, HEADS, 16, 16) and s_none[1].abs().max() == 0


def test_gradients_match_reference() -> None:
    q, k, v, s0 = make_inputs(7, 2, 45)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, s0)]
    ref_leaves = [x.double().requires_grad_() for x in (q, k, v, s0)]
    g = torch.Generator().manual_seed(8)
    w_o, w_s = torch.randn(2, 45, HEADS, 16, generator=g), torch.randn(2, HEADS, 16, 16, generator=g)

    o, s = lightning_attn_chunked(*leaves[:3], SLOPES, leaves[3], output_final_state=True, block_size=16)
    ((o * w_o).sum() + (s * w_s).sum()).backward()
    ref_o, ref_s = lightning_attn_recurrent(*ref_leaves[:3], SLOPES.double(), ref_leaves[3])
    ((ref_o * w_o.double()).sum() + (ref_s * w_s.double()).sum()).backward()
    for name, x, r in zip("qkvS", leaves, ref_leaves, strict=True):
        assert rel(x.grad, r.grad) < 1e-5, name


def test_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(9)
    q, k = (torch.randn(1, 6, 2, 3, dtype=torch.float64, generator=g) for _ in range(2))
    v = torch.randn(1, 6, 2, 2, dtype=torch.float64, generator=g)
    s0 = torch.randn(2, 2, 3, 2, dtype=torch.float64, generator=g)
    slopes = torch.tensor([0.7, 0.05], dtype=torch.float64)
    cu = torch.tensor([0, 1, 6])
    inputs = [x.requires_grad_() for x in (q, k, v, s0)]

    def batched(q, k, v, s0):
        return lightning_attn_chunked(q, k, v, slopes, s0[:1], output_final_state=True, block_size=4)

    def packed(q, k, v, s0):
        return lightning_attn_chunked(
            q, k, v, slopes, s0, output_final_state=True, cu_seqlens=cu, block_size=2
        )

    assert torch.autograd.gradcheck(batched, inputs)
    assert torch.autograd.gradcheck(packed, inputs)


@pytest.mark.parametrize("with_time_axis", [False, True])
def test_step_matches_full_pass_and_updates_in_place(with_time_axis: bool) -> None:
    q, k, v, s0 = make_inputs(10, 3, 20, dim_v=8)
    s0 = s0[..., :8].contiguous()
    full_o, full_s = lightning_attn(q, k, v, SLOPES, s0, output_final_state=True)
    state = s0.clone()
    ptr = state.data_ptr()
    outs = []
    for t in range(q.shape[1]):
        if with_time_axis:
            o_t = lightning_attn_step(q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], SLOPES, state)
            assert o_t.shape == (3, 1, HEADS, 8)
            outs.append(o_t[:, 0])
        else:
            o_t = lightning_attn_step(q[:, t], k[:, t], v[:, t], SLOPES, state)
            assert o_t.shape == (3, HEADS, 8)
            outs.append(o_t)
    assert state.data_ptr() == ptr
    assert rel(torch.stack(outs, dim=1), full_o) < 1e-5
    assert rel(state, full_s) < 1e-5


def test_step_bf16_keeps_float32_state() -> None:
    q, k, v, s0 = make_inputs(11, 2, 1, dtype=torch.bfloat16)
    state = s0.clone()
    o = lightning_attn_step(q[:, 0], k[:, 0], v[:, 0], SLOPES, state)
    ref_o, ref_s = reference(q, k, v, SLOPES, s0)
    assert o.dtype == torch.bfloat16 and state.dtype == torch.float32
    assert rel(o, ref_o[:, 0]) < 1e-2 and rel(state, ref_s) < 1e-6


def test_prefill_then_continue_equals_one_pass() -> None:
    q, k, v, _ = make_inputs(12, 2, 150)
    full_o, full_s = lightning_attn(q, k, v, SLOPES, output_final_state=True)
    cut = 97
    o1, s1 = lightning_attn(q[:, :cut], k[:, :cut], v[:, :cut], SLOPES, output_final_state=True)
    o2, s2 = lightning_attn(q[:, cut:], k[:, cut:], v[:, cut:], SLOPES, s1, output_final_state=True)
    assert rel(torch.cat([o1, o2], dim=1), full_o) < 1e-5 and rel(s2, full_s) < 1e-5
    # ... and decoding the rest token by token from the prefill state.
    state = s1.clone()
    steps = [lightning_attn_step(q[:, t], k[:, t], v[:, t], SLOPES, state) for t in range(cut, 150)]
    assert rel(torch.stack(steps, dim=1), full_o[:, cut:]) < 1e-5 and rel(state, full_s) < 1e-5


@pytest.mark.parametrize(
    ("heads", "layer", "layers"), [(8, 0, 8), (8, 5, 8), (64, 0, 80), (64, 79, 80), (6, 2, 5)]
)
def test_slopes_match_transformers(heads: int, layer: int, layers: int) -> None:
    modeling = pytest.importorskip("transformers.models.minimax.modeling_minimax")
    module = SimpleNamespace(num_attention_heads=heads, layer_idx=layer, num_hidden_layers=layers)
    expected = modeling.MiniMaxLightningAttention.get_slope_rate(module).flatten()
    slopes = lightning_decay_slopes(heads, layer, layers)
    assert slopes.dtype == torch.float32 and slopes.shape == (heads,)
    torch.testing.assert_close(slopes, expected, rtol=0, atol=0)


def test_backend_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v, _ = make_inputs(13, 1, 5)
    for name in ("auto", "torch", " Torch "):
        monkeypatch.setenv(BACKEND_ENV, name)
        lightning_attn(q, k, v, SLOPES)
    assert resolve_backend(torch.device("cpu")) == "torch"  # auto: the PyTorch path off CUDA
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match="not a lightning-attention backend"):
        lightning_attn(q, k, v, SLOPES)


def _bad_inputs() -> SimpleNamespace:
    q, k, v, s0 = make_inputs(14, 2, 6)
    return SimpleNamespace(q=q, k=k, v=v, s0=s0, q1=q[:1], k1=k[:1], v1=v[:1], t=(q[:, 0], k[:, 0], v[:, 0]))


def _packed(x: SimpleNamespace, cu: list, **kwargs):
    return lightning_attn(x.q1, x.k1, x.v1, SLOPES, cu_seqlens=torch.tensor(cu), **kwargs)


BAD_CALLS = {
    "k_shape": ("shape of q", lambda x: lightning_attn(x.q, x.k[..., :8], x.v, SLOPES)),
    "v_shape": ("v must be", lambda x: lightning_attn(x.q, x.k, x.v[:, :5], SLOPES)),
    "rank": ("4-D", lambda x: lightning_attn(x.q[0], x.k[0], x.v[0], SLOPES)),
    "int_dtype": ("floating dtype", lambda x: lightning_attn(x.q.long(), x.k, x.v, SLOPES)),
    "mixed_dtype": ("share one dtype", lambda x: lightning_attn(x.q, x.k.double(), x.v, SLOPES)),
    "slopes_len": (r"expected \(8,\), found \(4,\)", lambda x: lightning_attn(x.q, x.k, x.v, SLOPES[:4])),
    "state_shape": (
        r"expected \(2, 8, 16, 16\), found \(1, 8, 16, 16\)",
        lambda x: lightning_attn(x.q, x.k, x.v, SLOPES, x.s0[:1]),
    ),
    "cu_batch": (
        "batch size 1",
        lambda x: lightning_attn(x.q, x.k, x.v, SLOPES, cu_seqlens=torch.tensor([0, 6])),
    ),
    "cu_start": ("start at 0", lambda x: _packed(x, [1, 6])),
    "cu_order": ("non-decreasing", lambda x: _packed(x, [0, 4, 3, 6])),
    "cu_end": ("end at the packed length", lambda x: _packed(x, [0, 5])),
    "cu_dtype": ("int32/int64", lambda x: _packed(x, [0.0, 6.0])),
    "cu_state_rows": ("one row per packed", lambda x: _packed(x, [0, 6], initial_state=x.s0)),
    "block_size": ("block_size", lambda x: lightning_attn_chunked(x.q, x.k, x.v, SLOPES, block_size=0)),
    "step_tokens": ("one token per", lambda x: lightning_attn_step(x.q, x.k, x.v, SLOPES, x.s0.clone())),
    "step_state_dtype": ("float32", lambda x: lightning_attn_step(*x.t, SLOPES, x.s0.bfloat16())),
    "step_state_shape": (
        r"expected \(2, 8, 16, 16\)",
        lambda x: lightning_attn_step(*x.t, SLOPES, x.s0[:, :2]),
    ),
    "slopes_layer": ("layer_idx", lambda x: lightning_decay_slopes(8, 8, 8)),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_inputs_raise_informative_errors(case: str) -> None:
    pattern, call = BAD_CALLS[case]
    with pytest.raises(ValueError, match=pattern):
        call(_bad_inputs())
