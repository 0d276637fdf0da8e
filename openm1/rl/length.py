"""The maximum generation length, grown in stages when the policy looks stable.

The paper grew the limit from 40K to 80K tokens in stages, moving on once the generated tokens'
perplexity had converged and the 99th-percentile length neared the limit. :class:`LengthSchedule`
takes indicators every trainer has: it moves to the next stage after at least ``window`` steps in the
current one when, over the last ``window`` steps, the truncation rate stayed at most
``max_truncation_rate`` (answers mostly end before the limit: the policy is not fighting it) and the
reward trend (least-squares slope per step) is not falling by more than ``reward_tolerance``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LengthSchedule:
    """Stages of ``max_new_tokens`` (e.g. ``[64, 128, 256]``) and the rule that advances them."""

    stages: list[int] = field(default_factory=lambda: [256])
    """Increasing generation limits; the run starts at the first."""
    window: int = 5
    """Steps of evidence: the indicators are averaged over the last ``window`` steps of the stage."""
    max_truncation_rate: float = 0.1
    """Advance only while the mean truncation rate over the window is at most this (in [0, 1])."""
    reward_tolerance: float = 0.0
    """Advance only while the reward's slope over the window is at least ``-reward_tolerance``."""
    stage: int = 0
    _truncation: deque = field(default_factory=deque, repr=False)
    _reward: deque = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        s = self.stages
        if not s or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in s):
            raise ValueError(f"length stages must be a non-empty list of positive integers, got {s!r}")
        if any(b <= a for a, b in zip(s, s[1:], strict=False)):
            raise ValueError(f"length stages must increase, got {s}")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"length window must be a positive integer, got {self.window!r}")
        if not 0.0 <= self.max_truncation_rate <= 1.0:
            raise ValueError(f"max_truncation_rate must be in [0, 1], got {self.max_truncation_rate}")
        if self.reward_tolerance < 0:
            raise ValueError(f"reward_tolerance must be >= 0, got {self.reward_tolerance}")

    @property
    def current(self) -> int:
        """The generation limit of the current stage."""
        return self.stages[self.stage]

    @property
    def final(self) -> bool:
        return self.stage == len(self.stages) - 1

    def update(self, truncation_rate: float, reward: float) -> bool:
        """Record one step's indicators; returns True when this moved to the next stage."""
        self._truncation.append(float(truncation_rate))
        self._reward.append(float(reward))
        while len(self._truncation) > self.window:
            self._truncation.popleft()
            self._reward.popleft()
        if self.final or len(self._truncation) < self.window:
            return False
        trunc = sum(self._truncation) / self.window
        if trunc > self.max_truncation_rate or slope(list(self._reward)) < -self.reward_tolerance:
            return False
        self.stage += 1
        self._truncation.clear()
        self._reward.clear()
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "truncation": list(self._truncation), "reward": list(self._reward)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not 0 <= state["stage"] < len(self.stages):
            raise ValueError(f"saved length stage {state['stage']} is outside the configured {self.stages}")
        self.stage = state["stage"]
        self._truncation = deque(state["truncation"])
        self._reward = deque(state["reward"])


def slope(ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against 0, 1, 2, ... (0 for fewer than two points)."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(ys) / n
    num = sum((i - mx) * (y - my) for i, y in enumerate(ys))
    den = sum((i - mx) ** 2 for i in range(n))
    return num / den
