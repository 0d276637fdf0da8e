"""Causal attention within packed segments: the mask says what the segments mean, and on a GPU the
flash varlen kernel computes what that mask computes (forward and gradients, GQA, empty segments)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openm1.model.segments import Segments, flash_varlen_usable, segment_attention, segment_mask
from tests.model.helpers import rel_err


def _random_bounds(batch: int, time: int, generator: torch.Generator) -> list[int]:
    """Row boundaries plus random cuts inside each row (some repeated: empty segments)."""
    bounds = [0]
    for b in range(batch):
        cuts = sorted(torch.randint(0, time + 1, (3,), generator=generator).tolist())
        bounds += [b * time + c for c in cuts] + [(b + 1) * time]
    return bounds


def _per_segment(q, k, v, bounds):
    """Each segment's causal attention on its own (float64), stitched back together."""
    batch, time = q.shape[:2]
    flat = [t.reshape(batch * time, *t.shape[2:]) for t in (q, k, v)]
    out = torch.zeros_like(flat[0])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi > lo:
            qs, ks, vs = (t[lo:hi].transpose(0, 1)[None] for t in flat)
            out[lo:hi] = F.scaled_dot_product_attention(
                qs, ks, vs, is_causal=True, enable_gqa=ks.shape[1] != qs.shape[1]
            )[0].transpose(0, 1)
    return out.view(q.shape)


@pytest.mark.parametrize("seed", range(3))
def test_segment_mask_is_causal_within_each_segment(seed):
    g = torch.Generator().manual_seed(seed)
    batch, time = 2, 9
    bounds = _random_bounds(batch, time, g)
    mask = segment_mask(Segments(torch.tensor(bounds, dtype=torch.int32), time), batch, time)
    assert mask.shape == (batch, 1, time, time)
    for b in range(batch):
        for i in range(time):
            for j in range(time):
                flat_i, flat_j = b * time + i, b * time + j
                spans = zip(bounds, bounds[1:], strict=False)
                same = any(lo <= flat_i < hi and lo <= flat_j < hi for lo, hi in spans)
                assert bool(mask[b, 0, i, j]) == (same and j <= i), (b, i, j, bounds)


@pytest.mark.parametrize("seed", range(3))
def test_segment_attention_equals_each_segment_alone(seed):
    g = torch.Generator().manual_seed(seed)
    batch, time, heads, kv_heads, dim = 2, 11, 4, 2, 8
    shapes = [(batch, time, h, dim) for h in (heads, kv_heads, kv_heads)]
    q, k, v = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in shapes)
    bounds = _random_bounds(batch, time, g)
    out = segment_attention(q, k, v, Segments(torch.tensor(bounds, dtype=torch.int32), time))
    assert rel_err(out, _per_segment(q, k, v, bounds)) < 1e-12


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kv_heads", [8, 2])
def test_flash_varlen_matches_the_mask_path_forward_and_backward(dtype, kv_heads, monkeypatch):
    g = torch.Generator().manual_seed(7)
    batch, time, heads, dim = 2, 300, 8, 64
    bounds = _random_bounds(batch, time, g)
    segments = Segments(torch.tensor(bounds, dtype=torch.int32, device="cuda"), time)
    leaves = [
        torch.randn(batch, time, h, dim, generator=g).cuda().to(dtype).requires_grad_()
        for h in (heads, kv_heads, kv_heads)
    ]
    assert flash_varlen_usable(leaves[0]), "an H100 in half precision must take the flash varlen path"
    fast_out = segment_attention(*leaves, segments)
    fast_grads = torch.autograd.grad(fast_out.float().square().sum(), leaves)
    monkeypatch.setenv("OPENM1_VARLEN_ATTENTION", "0")
    assert not flash_varlen_usable(leaves[0])
    ref = [t.detach().double().cpu().requires_grad_() for t in leaves]
    ref_out = segment_attention(*ref, Segments(segments.cu_seqlens.cpu(), time))
    ref_grads = torch.autograd.grad(ref_out.square().sum(), ref)
    assert torch.isfinite(fast_out).all()
    assert rel_err(fast_out.double().cpu(), ref_out) < 1e-2
    for fast, expected in zip(fast_grads, ref_grads, strict=True):
        assert torch.isfinite(fast).all()
        assert rel_err(fast.double().cpu(), expected) < 2e-2
