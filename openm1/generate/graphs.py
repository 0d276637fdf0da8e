"""The decode step as one CUDA graph: a forward over every cache row, captured once, replayed per token.

Decoding a small batch is bound by kernel launches and host syncs, not by the GPU. Replaying a captured
graph launches the whole step at once. What capture needs, and how it is met without touching the model:

* static shapes: all ``num_rows`` rows every step (idle rows compute and are ignored), and softmax keys
  over the full ``max_len`` (the mask hides the unused slots);
* no host syncs: the cache's positions and lengths live on the device (``lengths_t``); the reference
  MoE, which reads expert counts on the host, is swapped during capture for a dense form that runs
  every expert on every row and weights the outputs by the routing (exact same math; cheap when the
  batch is small, which is when decode is launch-bound);
* host bookkeeping outside the graph: the engine advances the host copy of the lengths itself and
  keeps idle rows empty after each replay.
"""

from __future__ import annotations

import types
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from openm1.generate.cache import GenerationCache
from openm1.model.moe import Experts


def dense_experts_forward(
    self: Experts, x: torch.Tensor, top_w: torch.Tensor, top_i: torch.Tensor
) -> torch.Tensor:
    """Every expert on every token, weighted by the (renormalised top-k) routing: no data-dependent shapes."""
    combine = torch.zeros(x.shape[0], self.num_experts, device=x.device, dtype=x.dtype)
    combine.scatter_(1, top_i, top_w.to(x.dtype))
    gate, up = torch.einsum("th,eoh->eto", x, self.gate_up_proj).chunk(2, dim=-1)
    y = torch.einsum("eti,ehi->eth", F.silu(gate) * up, self.down_proj)
    return torch.einsum("eth,te->th", y, combine)


@contextmanager
def dense_moe(model: torch.nn.Module):
    experts = [m for m in model.modules() if isinstance(m, Experts)]
    for m in experts:
        m.forward = types.MethodType(dense_experts_forward, m)
    try:
        yield
    finally:
        for m in experts:
            del m.forward


class GraphedDecode:
    """Capture at construction (the cache must be empty: warm-up runs write to it and are undone)."""

    def __init__(self, model: torch.nn.Module, cache: GenerationCache) -> None:
        if cache.device.type != "cuda":
            raise ValueError("CUDA graphs need the model and cache on a CUDA device")
        if any(cache.in_use):
            raise ValueError("capture the decode graph before any row is in use")
        self.cache = cache
        self.tokens = torch.zeros(cache.num_rows, 1, dtype=torch.long, device=cache.device)
        self.idle = torch.ones(cache.num_rows, dtype=torch.bool, device=cache.device)
        self._active: list[int] | None = None
        view = cache.view(range(cache.num_rows))
        view.static_keys = True

        def step() -> torch.Tensor:
            return model(self.tokens, cache=view).logits[:, -1]

        with torch.no_grad(), dense_moe(model):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    step()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = step()
        for row in range(cache.num_rows):
            cache.reset_row(row)

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, active_rows: list[int]) -> torch.Tensor:
        """Logits ``[num_rows, vocab]`` for one token per row (rows not in ``active_rows`` are ignored)."""
        cache = self.cache
        self.tokens.copy_(tokens, non_blocking=True)
        self.graph.replay()
        # the graph advanced every row on the device; keep idle rows empty and the host copy in step
        if active_rows != self._active:  # rows joined or left: a new idle mask
            idle = torch.ones(cache.num_rows, dtype=torch.bool)
            idle[active_rows] = False
            self.idle.copy_(idle)
            self._active = list(active_rows)
        if len(active_rows) < cache.num_rows:
            cache.lengths_t.masked_fill_(self.idle, 0)
        for r in active_rows:
            cache.lengths[r] += 1
        return self.logits
