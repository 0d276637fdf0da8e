"""Schedules of the pretraining/SFT trainer, each a pure function of the step (so resuming needs only
the step): the learning rate (warmup, constant, then decay, as the paper's 8e-5 -> 8e-6), the MoE
load-balancing coefficient (decreasing), and the context length grown in stages."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DECAYS = ("cosine", "linear")


@dataclass(frozen=True)
class LRSchedule:
    """Linear warmup to ``peak`` over ``warmup_steps``, constant until ``decay_start``, then a cosine
    (or linear) decay to ``final`` at ``total_steps``; ``final`` after that."""

    peak: float
    final: float
    total_steps: int
    warmup_steps: int = 0
    decay_start: int = 0
    decay: str = "cosine"

    def __post_init__(self) -> None:
        if not self.peak > 0 or not 0 <= self.final <= self.peak:
            raise ValueError(f"need peak lr > 0 and 0 <= final lr <= peak, got {self.peak}, {self.final}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {self.decay!r}")
        if not 0 <= self.warmup_steps <= self.decay_start <= self.total_steps:
            raise ValueError(
                "need 0 <= warmup_steps <= decay_start <= total_steps, got "
                f"{self.warmup_steps}, {self.decay_start}, {self.total_steps}"
            )

    def __call__(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (counted from 0)."""
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if step < self.decay_start:
            return self.peak
        span = self.total_steps - self.decay_start
        frac = 1.0 if span <= 0 else min(1.0, (step - self.decay_start) / span)
        shape = 0.5 * (1 + math.cos(math.pi * frac)) if self.decay == "cosine" else 1.0 - frac
        return self.final + (self.peak - self.final) * shape


@dataclass(frozen=True)
class LinearSchedule:
    """``start`` at step 0, moving linearly to ``end`` at ``steps``, ``end`` after: the paper lowers
    the load-balancing coefficient during training (routing settles, the LM loss should dominate)."""

    start: float
    end: float
    steps: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < 0 or self.steps < 0:
            raise ValueError(
                f"need non-negative start, end and steps, got {self.start}, {self.end}, {self.steps}"
            )

    def __call__(self, step: int) -> float:
        if self.steps == 0 or step >= self.steps:
            return self.end
        return self.start + (self.end - self.start) * step / self.steps


@dataclass(frozen=True)
class ContextStages:
    """Context length grown in stages: ``stages`` are ``(first_step, seq_len)`` pairs, the first at
    step 0, steps and lengths both increasing (the paper: 32K, then up to 1M in four stages)."""

    stages: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, stages: Sequence[Sequence[int]] | int) -> ContextStages:
        """From a single length or a list of ``[first_step, seq_len]`` pairs (validated)."""
        if isinstance(stages, int):
            return cls(((0, stages),))
        pairs = tuple((int(s), int(n)) for s, n in stages)
        if not pairs or pairs[0][0] != 0:
            raise ValueError(f"context stages must start at step 0, got {list(pairs)}")
        for (s0, n0), (s1, n1) in zip(pairs, pairs[1:], strict=False):
            if s1 <= s0 or n1 <= n0:
                raise ValueError(f"context stages must grow in both step and length, got {list(pairs)}")
        if any(n < 2 for _, n in pairs):
            raise ValueError(f"each stage's seq_len must be at least 2, got {list(pairs)}")
        return cls(pairs)

    def __call__(self, step: int) -> int:
        length = self.stages[0][1]
        for first, n in self.stages:
            if step >= first:
                length = n
        return length

    @property
    def max_len(self) -> int:
        return self.stages[-1][1]
