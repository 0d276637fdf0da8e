"""The Triton lightning-attention kernels against the float64 recurrence: outputs, final states and every
gradient, dense and packed, with poisoned outputs. On CPU they run under TRITON_INTERPRET=1 (set by
tests/conftest.py) with small shapes; the ``gpu`` tests repeat them at real sizes on CUDA."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from openm1.ops.lightning import BACKEND_ENV, lightning_attn, lightning_attn_recurrent, lightning_decay_slopes  # noqa: E402
from openm1.ops.lightning.recurrent import lightning_attn_step as step_reference  # noqa: E402
from openm1.ops.lightning.triton import lightning_attn_step_triton, lightning_attn_triton  # noqa: E402
from openm1.ops.lightning.triton import ops as triton_ops  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"  # the interpreter on CPU, compiled kernels on a GPU


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.isfinite(a).all(), "NaN/inf in the kernel's result (an unwritten element?)"
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(triton_ops, "POISON_OUTPUTS", True)


MODES = {"segmented": "0", "single-pass": "1", "single-pass-wide": "1"}  # OPENM1_LA_SINGLE_PASS_MIN


@pytest.fixture(params=["segmented", "single-pass"])
def small_segments(monkeypatch, request):
    """Short chunks and segments, so a few hundred tokens cross many chunk and segment boundaries; run
    once in the segmented (state, scan, output) mode and once in the single-pass mode."""
    monkeypatch.setenv("OPENM1_LA_CONFIG", "16,16,4,1")
    monkeypatch.setenv("OPENM1_LA_SINGLE_PASS_MIN", MODES[request.param])
    monkeypatch.setattr(triton_ops, "_segment_length", lambda total, heads, tiles, chunk: 3 * chunk)


def inputs(seed, batch, length, heads, dk, dv, dtype, device=DEVICE, layer=3):
    g = torch.Generator().manual_seed(seed)
    mk = lambda d: (torch.randn(batch, length, heads, d, generator=g) * 0.5).to(device=device, dtype=dtype)  # noqa: E731
    q, k, v = mk(dk), mk(dk), mk(dv)
    slopes = lightning_decay_slopes(heads, layer, 8).to(device)
    return q, k, v, slopes


def reference(q, k, v, slopes, s0=None, cu=None):
    """float64 recurrence (per packed sequence when ``cu`` is given)."""
    args = [x.detach().double().cpu().requires_grad_(x.requires_grad) for x in (q, k, v)]
    s = slopes.double().cpu()
    init = s0.detach().double().cpu().requires_grad_(s0.requires_grad) if s0 is not None else None
    if cu is None:
        o, f = lightning_attn_recurrent(*args, s, initial_state=init)
        return o, f, args, init
    outs, finals = [], []
    for n in range(len(cu) - 1):
        sl = slice(cu[n], cu[n + 1])
        o, f = lightning_attn_recurrent(
            *(x[:, sl] for x in args), s, initial_state=None if init is None else init[n : n + 1]
        )
        outs.append(o)
        finals.append(f)
    return torch.cat(outs, 1), torch.cat(finals, 0), args, init


TOL = {torch.float32: 1e-3, torch.bfloat16: 1e-2, torch.float16: 1e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("length", [1, 37, 150])
def test_forward_and_final_state(small_segments, dtype, length):
    q, k, v, slopes = inputs(length, 2, length, 2, 16, 32, dtype)
    s0 = torch.randn(2, 2, 16, 32, device=DEVICE) * 0.3
    o, final = lightning_attn_triton(q, k, v, slopes, initial_state=s0, output_final_state=True)
    ro, rf, _, _ = reference(q, k, v, slopes, s0)
    assert o.dtype == dtype and final.dtype == torch.float32
    assert rel(o, ro) < TOL[dtype]
    assert rel(final, rf) < TOL[dtype]


def test_default_launch_configuration(monkeypatch):
    """The configuration used in production (64-token chunks, automatic segments) on a small input."""
    q, k, v, slopes = inputs(5, 1, 200, 2, 32, 32, torch.float32)
    o, _ = lightning_attn_triton(q, k, v, slopes)
    assert rel(o, reference(q, k, v, slopes)[0]) < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_single_pass_with_whole_value_tiles(monkeypatch, dtype):
    """The single-pass launch with 128-wide value tiles (taken, with the state update's decay on k,
    when many sequences fill the GPU), forced on a small input: outputs, final states and gradients."""
    monkeypatch.setenv("OPENM1_LA_DECAY_ON_V", "0")
    monkeypatch.setenv("OPENM1_LA_SINGLE_PASS_MIN", "1")
    monkeypatch.setenv("OPENM1_LA_WIDE_MIN", "1")
    q, k, v, slopes = inputs(11, 2, 70, 2, 32, 128, dtype)
    s0 = (torch.randn(2, 2, 32, 128, device=DEVICE) * 0.3).requires_grad_(True)
    for x in (q, k, v):
        x.requires_grad_(True)
    o, final = lightning_attn_triton(q, k, v, slopes, initial_state=s0, output_final_state=True)
    do = torch.randn_like(o)
    ((o.float() * do.float()).sum() + final.sum()).backward()
    ro, rf, rargs, rinit = reference(q, k, v, slopes, s0)
    ((ro * do.double().cpu()).sum() + rf.sum()).backward()
    assert rel(o, ro) < TOL[dtype] and rel(final, rf) < TOL[dtype]
    for name, mine, ref in zip("q k v s0".split(), (q, k, v, s0), (*rargs, rinit), strict=True):
        assert rel(mine.grad, ref.grad) < TOL[dtype], name


def test_packed_sequences_with_initial_states(small_segments):
    cu = [0, 5, 70, 71, 71, 150]
    q, k, v, slopes = inputs(7, 1, 150, 2, 16, 16, torch.float32)
    s0 = torch.randn(5, 2, 16, 16, device=DEVICE) * 0.3
    o, final = lightning_attn_triton(
        q, k, v, slopes, initial_state=s0, output_final_state=True, cu_seqlens=torch.tensor(cu, device=DEVICE)
    )
    ro, rf, _, _ = reference(q, k, v, slopes, s0, cu)
    assert rel(o, ro) < 1e-3 and rel(final, rf) < 1e-3
    assert torch.equal(final[3], s0[3].float())  # an empty sequence hands its state through


def gradient_errors(dtype, packed) -> dict[str, float]:
    """Relative errors of the gradients of q, k, v and the initial state against the float64 recurrence,
    through the output and the final state, dense or packed."""
    batch, cu = (1, [0, 40, 41, 100]) if packed else (2, None)
    length = 100 if packed else 77
    q, k, v, slopes = inputs(11, batch, length, 2, 16, 32, dtype)
    n_seq = 3 if packed else batch
    s0 = torch.randn(n_seq, 2, 16, 32, device=DEVICE) * 0.3
    for x in (q, k, v, s0):
        x.requires_grad_(True)
    cu_t = torch.tensor(cu, device=DEVICE) if packed else None
    o, final = lightning_attn_triton(
        q, k, v, slopes, initial_state=s0, output_final_state=True, cu_seqlens=cu_t
    )
    g = torch.Generator().manual_seed(3)
    do = torch.randn(o.shape, generator=g).to(device=DEVICE, dtype=dtype)
    dfinal = torch.randn(final.shape, generator=g).to(DEVICE)
    ((o.float() * do.float()).sum() + (final * dfinal).sum()).backward()

    ro, rf, rargs, rinit = reference(q, k, v, slopes, s0, cu)
    ((ro * do.double().cpu()).sum() + (rf * dfinal.double().cpu()).sum()).backward()
    names, mine, refs = "q k v s0".split(), (q, k, v, s0), (*rargs, rinit)
    return {n: rel(m.grad.cpu(), r.grad) for n, m, r in zip(names, mine, refs, strict=True)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("packed", [False, True])
def test_gradients_of_inputs_and_initial_state(small_segments, dtype, packed):
    errors = gradient_errors(dtype, packed)
    assert max(errors.values()) < TOL[dtype], errors


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_update_with_the_decay_on_k(monkeypatch, small_segments, dtype):
    """OPENM1_LA_DECAY_ON_V=0 computes the state update as (w k)^T v instead of the default k^T (w v):
    the same forward, final state and gradients (the backward's scans use it too)."""
    monkeypatch.setenv("OPENM1_LA_DECAY_ON_V", "0")
    errors = gradient_errors(dtype, packed=True)
    assert max(errors.values()) < TOL[dtype], errors


def test_gradient_without_final_state(small_segments):
    q, k, v, slopes = inputs(13, 2, 50, 2, 16, 16, torch.float32)
    for x in (q, k, v):
        x.requires_grad_(True)
    o, _ = lightning_attn_triton(q, k, v, slopes)
    o.square().sum().backward()
    ro, _, rargs, _ = reference(q, k, v, slopes)
    ro.square().sum().backward()
    for mine, ref in zip((q, k, v), rargs, strict=True):
        assert rel(mine.grad.cpu(), ref.grad) < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_step_updates_state_in_place(dtype):
    q, k, v, slopes = inputs(17, 3, 1, 2, 32, 16, dtype)
    state = torch.randn(3, 2, 32, 16, device=DEVICE)
    expected_state = state.clone()
    expected = step_reference(q, k, v, slopes, expected_state)
    out = lightning_attn_step_triton(q, k, v, slopes, state)
    assert out.shape == (3, 1, 2, 16) and out.dtype == dtype
    assert rel(state, expected_state) < 1e-6
    assert rel(out, expected) < TOL[dtype]


def test_dispatch_runs_triton_when_asked(monkeypatch, small_segments):
    monkeypatch.setenv(BACKEND_ENV, "triton")
    q, k, v, slopes = inputs(19, 1, 20, 2, 16, 16, torch.float32)
    o, _ = lightning_attn(q, k, v, slopes)
    assert rel(o, reference(q, k, v, slopes)[0]) < 1e-3


def test_inference_calls_the_launches_without_the_custom_op(monkeypatch, small_segments):
    """No autograd and no tracing: the launches are called directly (the op's dispatch is host time a
    prefill pays per layer); same numbers as through the op, which gradients still go through."""
    q, k, v, slopes = inputs(29, 2, 24, 2, 16, 16, torch.float32)
    s0 = torch.randn(2, 2, 16, 16, device=DEVICE)
    via_op = lightning_attn_triton(q, k, v, slopes, initial_state=s0, output_final_state=True)
    calls = []
    real_op = triton_ops.lightning_fwd
    monkeypatch.setattr(triton_ops, "lightning_fwd", lambda *a: calls.append(1) or real_op(*a))
    with torch.no_grad():
        direct = lightning_attn_triton(q, k, v, slopes, initial_state=s0, output_final_state=True)
    assert calls == []
    assert torch.equal(direct[0], via_op[0]) and torch.equal(direct[1], via_op[1])
    qg = q.clone().requires_grad_()
    o, _ = lightning_attn_triton(qg, k, v, slopes)
    assert calls == [1]
    o.sum().backward()
    assert qg.grad is not None and torch.isfinite(qg.grad).all()
    state = torch.randn(2, 2, 16, 16, device=DEVICE)
    expected_state = state.clone()
    step_calls = []
    real_step = triton_ops.lightning_step
    monkeypatch.setattr(triton_ops, "lightning_step", lambda *a: step_calls.append(1) or real_step(*a))
    out = lightning_attn_step_triton(q[:, :1], k[:, :1], v[:, :1], slopes, state)
    assert step_calls == []
    assert rel(out, step_reference(q[:, :1], k[:, :1], v[:, :1], slopes, expected_state)) < 1e-3
    assert rel(state, expected_state) < 1e-6


def test_torch_compile_traces_without_graph_breaks(small_segments):
    q, k, v, slopes = inputs(23, 1, 20, 2, 16, 16, torch.float32)

    def layer(q, k, v):
        o, state = lightning_attn_triton(q, k, v, slopes, output_final_state=True)
        return o.sum(-1), state

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    o, state = compiled(q, k, v)
    ro, rf, _, _ = reference(q, k, v, slopes)
    assert rel(o, ro.sum(-1)) < 1e-3 and rel(state, rf) < 1e-3


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(q=a["q"][..., :12], k=a["k"][..., :12]), "head dims"),
        (lambda a: a.update(k=a["k"][:, :5]), "k must have the shape of q"),
        (lambda a: a.update(v=a["v"].double()), "share one dtype"),
        (lambda a: a.update(initial_state=torch.zeros(2, 2, 16, 8)), "initial_state"),
        (lambda a: a.update(cu_seqlens=torch.tensor([0, 3, 2, 10])), "non-decreasing"),
        (lambda a: a.update(cu_seqlens=torch.tensor([0, 3, 9])), "end at the packed length"),
    ],
)
def test_bad_inputs_fail_before_launch(monkeypatch, change, message):
    def no_launch(*args, **kwargs):
        raise AssertionError("a kernel was launched on invalid input")

    monkeypatch.setattr(triton_ops, "scan", no_launch)
    q, k, v, slopes = inputs(29, 1, 10, 2, 16, 16, torch.float32)
    args = dict(q=q, k=k, v=v, slopes=slopes)
    change(args)
    with pytest.raises(ValueError, match=message):
        lightning_attn_triton(**args)


# ---------------------------------------------------------------------- on the GPU, at real sizes
@pytest.mark.gpu
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dim", [64, 128, 256])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_forward_backward_against_float64(dim, dtype, mode, monkeypatch):
    monkeypatch.setenv("OPENM1_LA_SINGLE_PASS_MIN", MODES[mode])
    monkeypatch.setenv("OPENM1_LA_WIDE_MIN", "1" if mode == "single-pass-wide" else "100000")
    if mode == "single-pass-wide":  # the wide tiles go with the state update's decay on k
        monkeypatch.setenv("OPENM1_LA_DECAY_ON_V", "0")
    cu = [0, 1000, 1001, 5000, 9000]
    q, k, v, slopes = inputs(31, 1, 9000, 4, dim, dim, dtype, device="cuda", layer=2)
    s0 = (torch.randn(4, 4, dim, dim) * 0.3).cuda()
    for x in (q, k, v, s0):
        x.requires_grad_(True)
    o, final = lightning_attn_triton(
        q, k, v, slopes, initial_state=s0, output_final_state=True, cu_seqlens=torch.tensor(cu).cuda()
    )
    do = torch.randn_like(o)
    ((o.float() * do.float()).sum() + final.sum()).backward()
    ro, rf, rargs, rinit = reference(q, k, v, slopes, s0, cu)
    ((ro * do.double().cpu()).sum() + rf.sum()).backward()
    assert rel(o.cpu(), ro) < TOL[dtype] and rel(final.cpu(), rf) < TOL[dtype]
    for name, mine, ref in zip("q k v s0".split(), (q, k, v, s0), (*rargs, rinit), strict=True):
        assert rel(mine.grad.cpu(), ref.grad) < TOL[dtype], name


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("config", [None, "64,4", "128,8"])
def test_gpu_decode_step(batch, config, monkeypatch):
    if config:
        monkeypatch.setenv("OPENM1_LA_DECODE_CONFIG", config)
    q, k, v, slopes = inputs(37, batch, 1, 64, 128, 128, torch.bfloat16, device="cuda")
    state = torch.randn(batch, 64, 128, 128, device="cuda")
    expected_state = state.clone()
    expected = step_reference(q, k, v, slopes, expected_state)
    out = lightning_attn_step_triton(q, k, v, slopes, state)
    assert rel(state, expected_state) < 1e-6 and rel(out, expected) < 1e-2
