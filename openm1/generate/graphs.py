"""The decode step as one CUDA graph: a forward over every cache row, captured once, replayed per token.

Decoding a small batch is bound by kernel launches and host syncs, not by the GPU. Replaying a captured
graph launches the whole step at once. What capture needs, and how it is met without touching the model:

* static shapes: all ``num_rows`` rows every step (idle rows compute and are ignored), and softmax keys
  over the full ``max_len`` (the mask hides the unused slots);
* no host syncs: the cache's positions and lengths live on the device (``lengths_t``); the reference
  MoE, which reads expert counts on the host, is swapped during capture for a sync-free form (see
  inference.py): grouped matmuls over the tokens sorted by expert, or a dense form that runs every
  expert on every row and weights the outputs by the routing;
* the input tokens are a device buffer the engine's sampler writes, so a step can be launched before
  the host has read the previous one's tokens;
* host bookkeeping outside the graph: the engine advances the host copy of the lengths itself and
  keeps idle rows empty after each replay.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from openm1.generate.cache import GenerationCache
from openm1.generate.inference import InferenceForms, dense_experts_forward, swapped_experts

__all__ = ["GraphedDecode", "dense_experts_forward", "dense_moe"]


@contextmanager
def dense_moe(model: torch.nn.Module):
    """Every expert on every token (the sync-free MoE a decode graph can hold), for the duration."""
    with swapped_experts(model, "dense"):
        yield


class GraphedDecode:
    """Capture at construction (the cache must be empty: warm-up runs write to it and are undone).

    ``forms`` are the inference forms captured (their experts must not sync: ``dense`` or ``grouped``).
    The input tokens are read from ``self.tokens`` ``[rows, 1]``, which the engine's sampler writes.
    """

    def __init__(self, model: torch.nn.Module, cache: GenerationCache, forms: InferenceForms) -> None:
        if cache.device.type != "cuda":
            raise ValueError("CUDA graphs need the model and cache on a CUDA device")
        if any(cache.in_use):
            raise ValueError("capture the decode graph before any row is in use")
        if forms.experts == "reference":
            raise ValueError("the reference experts read counts on the host; capture 'dense' or 'grouped'")
        self.cache = cache
        self.tokens = torch.zeros(cache.num_rows, 1, dtype=torch.long, device=cache.device)
        self.idle = torch.ones(cache.num_rows, dtype=torch.bool, device=cache.device)
        self._active: list[int] | None = None
        view = cache.view(range(cache.num_rows))
        view.static_keys = True

        def step() -> torch.Tensor:
            return model(self.tokens, cache=view).logits[:, -1]

        with torch.no_grad(), forms:
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
    def __call__(self, active_rows: list[int]) -> torch.Tensor:
        """Logits ``[num_rows, vocab]`` for the tokens in ``self.tokens`` (rows not in ``active_rows``
        are computed and ignored)."""
        cache = self.cache
        self.graph.replay()
        # the graph advanced every row on the device; keep idle rows empty and the host copy in step
        if active_rows != self._active:  # rows joined or left: a new idle mask
            idle = torch.ones(cache.num_rows, dtype=torch.bool)
            idle[active_rows] = False
            self.idle.copy_(idle.pin_memory(), non_blocking=True)
            self._active = list(active_rows)
        if len(active_rows) < cache.num_rows:
            cache.lengths_t.masked_fill_(self.idle, 0)
        for r in active_rows:
            cache.lengths[r] += 1
        return self.logits
