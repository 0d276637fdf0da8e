"""A one-prompt prefill replayed as a CUDA graph, one graph per prompt-length bucket.

A prefill of a few thousand tokens is bound by the host: the forward launches some 400 kernels, each
costing more host time than device time, so an eager 2K-token prefill takes several times its kernel
time. Replaying a captured graph launches them all at once. Graphs need fixed shapes, so a prompt is
left-padded to its bucket (at most a quarter longer than the prompt), and exactness is kept by what
left padding already means in this model:

* lightning layers zero the padding's k and v (``token_mask``), so a fresh row's state stays zero
  through the padding and the real tokens see exactly what they would unpadded;
* softmax layers attend over this forward's own keys in two causal segments, the padding and the
  prompt (PyTorch's flash varlen kernel on the GPU, no ``[time, time]`` mask), so real tokens see
  real tokens only and every padding query sees at least itself;
* positions count real tokens only, so the first real token sits at RoPE position 0;
* keys and values of real tokens go to their slots in the row; padding goes to the row's last slot,
  which this prompt never reaches and a later token overwrites.

Everything a replay varies (the tokens, the mask, the segment boundary, the cache row, the real
count) lives in device
buffers written before the replay; the host keeps its copy of the row's length itself.
"""

from __future__ import annotations

import torch

from openm1.generate.cache import GenerationCache
from openm1.generate.inference import InferenceForms
from openm1.model.context import CacheLayout
from openm1.model.segments import Segments

__all__ = ["PREFILL_GRAPH_MAX", "PaddedPrefillView", "PrefillGraphs", "prefill_bucket"]

PREFILL_GRAPH_MAX = 8192
"""The longest prompt graphed by default: beyond it the kernels' own time dwarfs the launches', while
every bucket's graph keeps activations for its length in the shared pool."""


def prefill_bucket(length: int, smallest: int = 64) -> int:
    """The padded length a prompt of ``length`` tokens is replayed at: a power of two, or 5/4, 6/4 or
    7/4 of one from 512 up (so padding adds at most a quarter, and few graphs cover a wide range)."""
    if length < 1:
        raise ValueError(f"a prompt needs at least one token, got {length}")
    size = smallest
    while size < length:
        size *= 2
    if size >= 1024:
        quarter = size // 8  # size is twice the power of two below the length: steps of a quarter of it
        for steps in (5, 6, 7):
            if length <= quarter * steps:
                return quarter * steps
    return size


class PaddedPrefillView:
    """The cache as a one-row, ``time``-token prefill sees it, with every index on the device.

    ``load(row, prompt)`` writes the buffers; a forward of ``self.tokens`` with ``attention_mask =
    self.mask`` then fills that row as an unpadded prefill of the prompt would (to rounding: the
    padding changes the shapes the kernels are tiled over, not what any real token sees). The row
    must be fresh (empty): that is what keeps the padding out of the lightning states.
    """

    def __init__(self, cache: GenerationCache, time: int) -> None:
        if time >= cache.max_len:
            raise ValueError(f"a padded prefill of {time} tokens needs max_len > {time}, got {cache.max_len}")
        self.cache, self.time = cache, time
        device = cache.device
        self.tokens = torch.zeros(1, time, dtype=torch.long, device=device)
        self.mask = torch.zeros(1, time, dtype=torch.long, device=device)
        self.row = torch.zeros(1, dtype=torch.long, device=device)
        self.count = torch.zeros(1, dtype=torch.long, device=device)
        self.cu_seqlens = torch.zeros(3, dtype=torch.int32, device=device)  # [0, padding, time]
        self._write: torch.Tensor | None = None
        # one host staging buffer (pinned on CUDA) for all five, copied in one go
        self._staging = torch.zeros(2 * time + 5, dtype=torch.long, pin_memory=device.type == "cuda")
        self._packed = torch.zeros(2 * time + 5, dtype=torch.long, device=device)
        self._copied = torch.cuda.Event() if device.type == "cuda" else None

    def load(self, row: int, prompt: torch.Tensor, pad_token_id: int = 0) -> None:
        """Stage one prompt (a 1-D tensor of ids, at most ``time`` long) for cache row ``row``."""
        n, t = prompt.numel(), self.time
        if not 0 < n <= t:
            raise ValueError(f"the prompt has {n} tokens; this padded prefill takes 1 to {t}")
        staging = self._staging
        if self._copied is not None:
            self._copied.synchronize()  # the last load's copy has read the staging buffer
        staging[: t - n].fill_(pad_token_id)
        staging[t - n : t].copy_(prompt)
        staging[t : 2 * t - n].zero_()
        staging[2 * t - n : 2 * t].fill_(1)
        staging[2 * t], staging[2 * t + 1] = row, n
        staging[2 * t + 2], staging[2 * t + 3], staging[2 * t + 4] = 0, t - n, t
        self._packed.copy_(staging, non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        self.tokens.copy_(self._packed[:t][None])
        self.mask.copy_(self._packed[t : 2 * t][None])
        self.row.copy_(self._packed[2 * t : 2 * t + 1])
        self.count.copy_(self._packed[2 * t + 1 : 2 * t + 2])
        self.cu_seqlens.copy_(self._packed[2 * t + 2 :])

    # ------------------------------------------------------------------ the model's interface
    def get_seq_length(self) -> int:
        return 0

    def layout(self, token_mask: torch.Tensor | None, time: int) -> CacheLayout:
        if time != self.time:
            raise ValueError(f"this view was built for {self.time} tokens, the forward has {time}")
        real = self.mask.bool()
        slots = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self._write = torch.where(real, slots, self.cache.max_len - 1)[0]
        # causal over this forward's tokens within two segments: the padding, then the prompt
        segments = Segments(self.cu_seqlens, time)
        return CacheLayout(position_ids=slots, token_mask=self.mask, attention_bias=None, segments=segments)

    def get_state(self, layer_idx: int) -> None:
        return None  # a fresh row: the state starts at zero

    def set_state(self, layer_idx: int, state: torch.Tensor) -> None:
        self.cache.states[layer_idx].index_copy_(0, self.row, state.to(self.cache.state_dtype))

    def update_kv(
        self, layer_idx: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the real tokens' keys and values at their slots; attend over this forward's own."""
        if self._write is None:
            raise RuntimeError("the model must call layout() before update_kv()")
        kbuf, vbuf = self.cache.keys[layer_idx], self.cache.values[layer_idx]
        rows = self.row.expand(self.time)
        kbuf.index_put_((rows, self._write), key[0].to(kbuf.dtype))
        vbuf.index_put_((rows, self._write), value[0].to(vbuf.dtype))
        return key, value

    def advance(self, num_tokens: int) -> None:
        """The row's device length becomes the real count (the host copy is the caller's to set)."""
        self.cache.lengths_t.index_copy_(0, self.row, self.count)
        self._write = None


class PrefillGraphs:
    """Captured one-prompt prefills by bucket (captured the first time a bucket is used).

    Graphs share one memory pool (they never run at once), so their activations take the room of the
    largest, not the sum. The logits a replay returns live in that pool: read them before the next.
    """

    def __init__(
        self, model: torch.nn.Module, cache: GenerationCache, forms: InferenceForms, max_tokens: int
    ) -> None:
        if cache.device.type != "cuda":
            raise ValueError("CUDA graphs need the model and cache on a CUDA device")
        if forms.experts == "reference":
            raise ValueError("the reference experts read counts on the host; capture 'dense' or 'grouped'")
        self.model, self.cache, self.forms = model, cache, forms
        self.max_tokens = min(max_tokens, cache.max_len - 1)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, PaddedPrefillView, torch.Tensor]] = {}

    def covers(self, length: int) -> bool:
        return 0 < length and prefill_bucket(length) <= self.max_tokens

    @torch.no_grad()
    def __call__(self, row: int, prompt: torch.Tensor, pad_token_id: int = 0) -> torch.Tensor:
        """Prefill fresh row ``row`` with ``prompt`` (1-D ids on the host); its last logits ``[1, vocab]``."""
        size = prefill_bucket(prompt.numel())
        if size not in self.graphs:
            return self._capture(size, row, prompt, pad_token_id)
        graph, view, logits = self.graphs[size]
        view.load(row, prompt, pad_token_id)
        graph.replay()
        return logits

    def _capture(self, size: int, row: int, prompt: torch.Tensor, pad_token_id: int) -> torch.Tensor:
        view = PaddedPrefillView(self.cache, size)
        view.load(row, prompt, pad_token_id)

        def forward() -> torch.Tensor:
            out = self.model(view.tokens, attention_mask=view.mask, cache=view, logits_to_keep=1)
            return out.logits[:, -1]

        with self.forms:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: lazy initialisations happen outside the capture
                forward()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                logits = forward()
        self.graphs[size] = (graph, view, logits)
        graph.replay()  # the capture ran nothing: this is the prefill
        return logits
