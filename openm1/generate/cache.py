"""A preallocated hybrid cache with a length per row, for batched and continuous generation.

Softmax layers get key/value buffers ``[rows, max_len, kv_heads, head_dim]`` allocated once; lightning
layers get a float32 state ``[rows, heads, head_dim, head_dim]`` whatever the length. Each row holds
one sequence and keeps its own length, so sequences of different lengths decode side by side and a
finished row is freed and handed to a new request (continuous batching) without moving the others.

Padding is never stored: in a left-padded prefill only the real tokens are written, so row ``r``'s
tokens always sit at slots ``0 .. length[r] - 1`` and a token's RoPE position is its slot.

A forward runs on a :class:`CacheView` (some rows of the cache); the model calls ``layout`` once, then
``get_state``/``set_state``/``update_kv`` per layer, then ``advance``. Views over a contiguous range
of rows are slices, so the lightning decode step updates the states in place; other views work on
gathered copies that ``advance`` writes back.
"""

from __future__ import annotations

import torch
from torch.nn.attention.bias import causal_lower_right

from openm1.config import FULL, LINEAR, ModelConfig
from openm1.model.context import CacheLayout
from openm1.model.segments import Segments


class CacheFullError(ValueError):
    """A sequence would not fit in the rows' preallocated length."""


class GenerationCache:
    """Buffers for ``num_rows`` sequences of at most ``max_len`` tokens each."""

    def __init__(
        self,
        config: ModelConfig,
        num_rows: int,
        max_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if num_rows < 1 or max_len < 1:
            raise ValueError(f"num_rows and max_len must be positive, got {num_rows} and {max_len}")
        self.config = config
        self.num_rows = num_rows
        self.max_len = max_len
        self.device = torch.device(device)
        self.dtype = dtype
        self.state_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # float64: tests
        kv_shape = (num_rows, max_len, config.num_key_value_heads, config.head_dim)
        state_shape = (num_rows, config.num_attention_heads, config.head_dim, config.head_dim)
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.states: dict[int, torch.Tensor] = {}
        for i, kind in enumerate(config.layer_types):
            if kind == FULL:
                # zeros, not empty: stale slots must hold finite numbers (they are masked, never NaN)
                self.keys[i] = torch.zeros(kv_shape, device=self.device, dtype=dtype)
                self.values[i] = torch.zeros(kv_shape, device=self.device, dtype=dtype)
            elif kind == LINEAR:
                self.states[i] = torch.zeros(state_shape, device=self.device, dtype=self.state_dtype)
        self.lengths = [0] * num_rows  # host copy: sizes and capacity checks without a device sync
        self.lengths_t = torch.zeros(num_rows, dtype=torch.long, device=self.device)
        self.in_use = [False] * num_rows

    # ------------------------------------------------------------------ rows
    def allocate(self) -> int:
        """The lowest free row, reset to an empty sequence (low rows first keep decode batches short)."""
        for row in range(self.num_rows):
            if not self.in_use[row]:
                self.in_use[row] = True
                self.reset_row(row)
                return row
        raise CacheFullError(f"all {self.num_rows} cache rows are in use; free one or allocate more rows")

    def free(self, row: int) -> None:
        self.in_use[row] = False
        self.lengths[row] = 0
        self.lengths_t[row].zero_()  # a fill kernel: assigning a host 0 would sync

    def reset_row(self, row: int) -> None:
        self.lengths[row] = 0
        self.lengths_t[row].zero_()  # a fill kernel: assigning a host 0 would sync
        for s in self.states.values():
            s[row].zero_()

    @property
    def free_rows(self) -> int:
        return self.in_use.count(False)

    def view(self, rows: list[int] | range, idle: list[int] = ()) -> CacheView:
        """The object to pass to the model as ``cache`` for a forward over these rows (in this order).

        ``idle`` rows (free rows inside a decode slice) are computed but not kept: they stay empty.
        """
        return CacheView(self, list(rows), list(idle))

    def memory_bytes(self) -> int:
        kv = sum(t.numel() * t.element_size() for t in (*self.keys.values(), *self.values.values()))
        return kv + sum(s.numel() * s.element_size() for s in self.states.values())


class CacheView:
    """Some rows of a :class:`GenerationCache`, with the methods the model calls during one forward."""

    def __init__(self, cache: GenerationCache, rows: list[int], idle: list[int] | None = None) -> None:
        if not rows:
            raise ValueError("a cache view needs at least one row")
        self.cache = cache
        self.rows = rows
        self.idle = list(idle or [])
        contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
        self._slice = slice(rows[0], rows[0] + len(rows)) if contiguous else None
        self._index_t: torch.Tensor | None = None
        self._gathered: dict[int, torch.Tensor] = {}
        self._pending: tuple | None = None
        self._full = False
        self.static_keys = False
        """Keys over all ``max_len`` slots (fixed shapes, for CUDA graphs) rather than the used ones."""
        self.real_counts: list[int] | None = None
        """Real tokens per row in the next forward's padded ``attention_mask``, when the caller knows
        them: spares reading the mask back from the device (a sync on a GPU). Used once."""

    @property
    def _index(self) -> torch.Tensor:
        """The rows as a device tensor, made on first use (a copy to the device; slices never need it)."""
        if self._index_t is None:
            rows = torch.tensor(self.rows, dtype=torch.long)
            if self.cache.device.type == "cuda":
                rows = rows.pin_memory()
            self._index_t = rows.to(self.cache.device, non_blocking=True)
        return self._index_t

    # ------------------------------------------------------------------ the model's interface
    def get_seq_length(self) -> int:
        """The longest row's length (rows differ; the model uses :meth:`layout` for the details)."""
        return max(self.cache.lengths[r] for r in self.rows)

    def layout(self, token_mask: torch.Tensor | None, time: int) -> CacheLayout:
        """Place ``time`` new tokens per row after each row's own length; padding (mask 0) is skipped.

        Called by the model once per forward, before any layer writes.
        """
        cache, batch = self.cache, len(self.rows)
        device = cache.device
        known, self.real_counts = self.real_counts, None
        start = cache.lengths_t[self._slice] if self._slice is not None else cache.lengths_t[self._index]
        if token_mask is not None:
            if tuple(token_mask.shape) != (batch, time):
                raise ValueError(
                    f"with a generation cache the attention_mask covers this forward's tokens only: "
                    f"expected [{batch}, {time}], got {list(token_mask.shape)}"
                )
            token_mask = token_mask.to(device)
            if known is not None and len(known) != batch:
                raise ValueError(f"real_counts has {len(known)} rows but the forward has {batch}")
            if (known is not None and all(n == time for n in known)) or (
                known is None and bool(token_mask.all())
            ):
                token_mask = None
        if token_mask is None:
            added = [time] * batch
            offsets = torch.arange(time, device=device)[None, :].expand(batch, time)
        else:
            added = list(known) if known is not None else token_mask.long().sum(-1).tolist()
            padded = [r for r, n in zip(self.rows, added, strict=True) if n < time and cache.lengths[r] > 0]
            if padded:
                raise ValueError(
                    f"rows {padded} already hold tokens: padding is only allowed before a sequence's "
                    "first token (left padding at prefill)"
                )
            offsets = (token_mask.long().cumsum(-1) - 1).clamp(min=0)
        ends = [cache.lengths[r] + n for r, n in zip(self.rows, added, strict=True)]
        if max(ends) > cache.max_len:
            worst = self.rows[ends.index(max(ends))]
            raise CacheFullError(
                f"row {worst} would hold {max(ends)} tokens but the cache was allocated for "
                f"{cache.max_len}; raise max_len (or lower max_new_tokens / the prompt length)"
            )
        self._full = max(ends) >= cache.max_len
        slots = start[:, None] + offsets  # [batch, time]; padding points at a real slot, never written
        keys = cache.max_len if self.static_keys else max(ends)
        empty = all(cache.lengths[r] == 0 for r in self.rows)
        fresh = token_mask is not None and not self.static_keys and empty
        self._pending = (slots, token_mask, added, keys, fresh)
        if fresh:
            # a left-padded prefill of empty rows: each row is two causal segments of this forward's
            # own tokens, its padding then its prompt, which flash varlen runs without a mask
            bounds = [0]
            for b, n in enumerate(added):
                bounds += [b * time + time - n, (b + 1) * time]
            cu = torch.tensor(bounds, dtype=torch.int32)
            if device.type == "cuda":
                cu = cu.pin_memory()
            segments = Segments(cu.to(device, non_blocking=True), time)
            return CacheLayout(slots, token_mask, attention_bias=None, segments=segments)
        if token_mask is None and not self.static_keys and len({cache.lengths[r] for r in self.rows}) == 1:
            # every row holds as many tokens and none is padded: causal attention aligned at the end
            # (a first chunk, a later chunk of a long prompt, an even decode step), which SDPA's fused
            # kernels run without a materialised [time, keys] mask
            past = cache.lengths[self.rows[0]]
            bias = causal_lower_right(time, past + time) if past and time > 1 else None
            return CacheLayout(position_ids=slots, token_mask=None, attention_bias=bias)
        k_pos = torch.arange(keys, device=device)
        bias = k_pos[None, None, :] <= slots[:, :, None]  # causal within each row's own tokens
        if token_mask is not None:
            bias = bias | (token_mask[:, :, None] == 0) & (k_pos == 0)  # padding queries see slot 0: no NaN
        return CacheLayout(position_ids=slots, token_mask=token_mask, attention_bias=bias[:, None])

    def get_state(self, layer_idx: int) -> torch.Tensor:
        state = self.cache.states[layer_idx]
        if self._slice is not None:
            return state[self._slice]  # a view: the decode step updates it in place
        if layer_idx not in self._gathered:
            self._gathered[layer_idx] = state[self._index]
        return self._gathered[layer_idx]

    def set_state(self, layer_idx: int, state: torch.Tensor) -> None:
        if self._slice is not None:
            self.cache.states[layer_idx][self._slice].copy_(state)
        else:
            self._gathered[layer_idx] = state

    def update_kv(
        self, layer_idx: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this forward's real tokens at their slots; return ``[batch, keys, kv_heads, dim]``."""
        if self._pending is None:
            raise RuntimeError("the model must call layout() before update_kv()")
        slots, token_mask, _, keys, fresh = self._pending
        kbuf, vbuf = self.cache.keys[layer_idx], self.cache.values[layer_idx]
        key, value = key.to(kbuf.dtype), value.to(vbuf.dtype)
        if token_mask is None and self._slice is not None:
            # the decode step: a scatter along time into a slice (no advanced indexing; graph-safe)
            index = slots[:, :, None, None].expand_as(key)
            kbuf[self._slice].scatter_(1, index, key)
            vbuf[self._slice].scatter_(1, index, value)
            return kbuf[self._slice, :keys], vbuf[self._slice, :keys]
        rows = self._index[:, None].expand_as(slots)
        if token_mask is None:
            kbuf.index_put_((rows, slots), key)
            vbuf.index_put_((rows, slots), value)
        else:
            # padding goes to the last slot, which no real token of this forward reaches (checked in
            # layout) and whose own token overwrites it later: no masked selection, so no GPU sync
            if self._full:  # a row ends at the last slot: select the real tokens (a sync)
                real = token_mask.bool()
                kbuf.index_put_((rows[real], slots[real]), key[real])
                vbuf.index_put_((rows[real], slots[real]), value[real])
            else:
                write = torch.where(token_mask.bool(), slots, self.cache.max_len - 1)
                kbuf.index_put_((rows, write), key)
                vbuf.index_put_((rows, write), value)
        if fresh:
            return key, value  # attended in the forward's own (padded) layout, by segments
        if self._slice is not None:
            return kbuf[self._slice, :keys], vbuf[self._slice, :keys]
        return kbuf[self._index, :keys], vbuf[self._index, :keys]

    def advance(self, num_tokens: int) -> None:
        """Commit the forward: each row grows by its real tokens; gathered states are written back."""
        if self._pending is None:
            raise RuntimeError("advance() without a forward")
        _, _, added, _, _ = self._pending
        cache = self.cache
        for r, n in zip(self.rows, added, strict=True):
            cache.lengths[r] += n
        grown = cache.lengths_t[self._slice] if self._slice is not None else None
        if grown is not None and len(set(added)) == 1:  # the decode step: an in-place add on a slice
            grown += added[0]
        else:
            grown = torch.tensor(added)
            if cache.device.type == "cuda":
                grown = grown.pin_memory()
            cache.lengths_t[self._index] += grown.to(cache.device, non_blocking=True)
        for r in self.idle:  # rows that only rode along (free rows inside a decode slice) stay empty
            cache.lengths[r] = 0
            cache.lengths_t[r].zero_()
        for layer_idx, state in self._gathered.items():
            cache.states[layer_idx][self._index] = state
        self._gathered.clear()
        self._pending = None
