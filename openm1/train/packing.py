"""Training data as packed rows: documents (pretraining) or prompt/response pairs (SFT) laid end to end
in one row with ``cu_seqlens``, so no token attends across documents and no compute goes to padding.

An :class:`Example` is a token list with a per-token ``target`` flag: the loss predicts token ``t``
from the tokens before it (in its own document) only where ``target[t]`` is set, which is every token
but the first for pretraining and the response tokens for SFT. :class:`PackedLoader` walks the
examples in a seeded order per epoch and remembers its position exactly, so a resumed run reads the
same rows as an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One document. ``target`` (same length as ``tokens``) marks the tokens the loss predicts;
    None means all of them (pretraining)."""

    tokens: tuple[int, ...]
    target: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.tokens) < 2:
            raise ValueError(
                f"an example needs at least 2 tokens (one to read, one to predict), got {len(self.tokens)}"
            )
        if self.target is not None and len(self.target) != len(self.tokens):
            raise ValueError(f"target has {len(self.target)} flags for {len(self.tokens)} tokens")

    @classmethod
    def document(cls, tokens: Sequence[int]) -> Example:
        """Pretraining: predict every token after the first."""
        return cls(tuple(int(t) for t in tokens))

    @classmethod
    def prompt_response(cls, prompt: Sequence[int], response: Sequence[int]) -> Example:
        """SFT: the loss is on the response tokens only."""
        if not response:
            raise ValueError("an SFT example needs a non-empty response")
        return cls(
            tuple(int(t) for t in (*prompt, *response)),
            (False,) * len(prompt) + (True,) * len(response),
        )

    def num_targets(self) -> int:
        return len(self.tokens) - 1 if self.target is None else sum(self.target[1:])


@dataclass
class PackedBatch:
    """One packed row: ``input_ids [1, T]``, ``labels [1, T]`` (the next token of the same document,
    or -100), ``cu_seqlens [docs + 1]``."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    cu_seqlens: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return self.input_ids.shape[1]

    @property
    def num_targets(self) -> int:
        return int((self.labels != IGNORE).sum())

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.labels.to(device), self.cu_seqlens.to(device))


def pack(pieces: Sequence[Example]) -> PackedBatch:
    """Lay ``pieces`` end to end in one row; each one's labels stay inside it."""
    ids: list[int] = []
    labels: list[int] = []
    cu = [0]
    for ex in pieces:
        toks = ex.tokens
        for t in range(len(toks)):
            nxt = t + 1
            keep = nxt < len(toks) and (ex.target is None or ex.target[nxt])
            labels.append(toks[nxt] if keep else IGNORE)
        ids.extend(toks)
        cu.append(len(ids))
    return PackedBatch(
        torch.tensor([ids], dtype=torch.long),
        torch.tensor([labels], dtype=torch.long),
        torch.tensor(cu, dtype=torch.long),
    )


class PackedLoader:
    """Rows of at most ``seq_len`` tokens from ``examples``, in a seeded order reshuffled every epoch.

    A row takes whole examples while they fit; an example longer than ``seq_len`` is cut into pieces
    that overlap by one token (so every target is trained once). ``state_dict()`` is the exact position
    (epoch, index, offset inside a cut example)."""

    def __init__(self, examples: Sequence[Example], seed: int = 0, shuffle: bool = True) -> None:
        if not examples:
            raise ValueError("no training examples: give at least one document or prompt/response pair")
        self.examples = examples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.index = 0
        self.offset = 0
        self._order = self._make_order()

    @property
    def total_tokens(self) -> int:
        return sum(len(e.tokens) for e in self.examples)

    def _make_order(self) -> list[int]:
        order = list(range(len(self.examples)))
        if self.shuffle:
            random.Random(f"pack:{self.seed}:{self.epoch}").shuffle(order)
        return order

    def _advance_epoch(self) -> None:
        self.epoch += 1
        self.index = 0
        self.offset = 0
        self._order = self._make_order()

    def next_row(self, seq_len: int) -> PackedBatch:
        """The next packed row of at most ``seq_len`` tokens."""
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        pieces: list[Example] = []
        used = 0
        while True:
            if self.index >= len(self._order):
                if pieces:
                    break  # an epoch boundary closes the row: epochs never mix in one row
                self._advance_epoch()
            ex = self.examples[self._order[self.index]]
            rest = len(ex.tokens) - self.offset
            if rest <= seq_len - used:
                pieces.append(_slice(ex, self.offset, len(ex.tokens)))
                used += rest
                self.index += 1
                self.offset = 0
                if used == seq_len:
                    break
                continue
            if used > 0:
                break  # does not fit: start it in the next row
            pieces.append(_slice(ex, self.offset, self.offset + seq_len))
            self.offset += seq_len - 1  # the next piece re-reads the last token to predict the one after
            break
        return pack(pieces)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "offset": self.offset, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"the checkpoint's data order used seed {state['seed']}, this run uses {self.seed}: resume "
                "with the same seed"
            )
        self.epoch = int(state["epoch"])
        self._order = self._make_order()
        self.index, self.offset = int(state["index"]), int(state["offset"])


def _slice(ex: Example, start: int, end: int) -> Example:
    if start == 0 and end == len(ex.tokens):
        return ex
    target = None if ex.target is None else ex.target[start:end]
    return Example(ex.tokens[start:end], target)
