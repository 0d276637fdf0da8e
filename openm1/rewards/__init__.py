"""Rewards for RL: rule-verified (math, format, code, logic puzzles) and model-judged.

Every reward is a callable ``reward(prompt, response, reference, **meta) -> RewardResult``; wrap it in
:func:`guarded` so that one that raises or hangs scores 0 with the reason instead of stopping the run.
Imports are lazy: ``math`` needs the ``rl`` extra (math-verify), ``judge`` the ``openai`` client only
for endpoints.
"""

from __future__ import annotations

import importlib
from typing import Any

from openm1.rewards.base import Guarded, Reward, RewardResult, WeightedSum, guarded, score_batch

__all__ = [
    "REWARDS",
    "Guarded",
    "Reward",
    "RewardResult",
    "WeightedSum",
    "guarded",
    "make_reward",
    "score_batch",
]

#: Reward names a configuration may use, and the class each names (imported on first use).
REWARDS = {
    "math": "openm1.rewards.math:MathReward",
    "format": "openm1.rewards.format:FormatReward",
    "code": "openm1.rewards.sandbox:CodeReward",
    "logic": "openm1.rewards.logic:LogicReward",
    "judge": "openm1.rewards.judge:JudgeReward",
    "reasoning_gym": "openm1.rewards.logic.gym:ReasoningGymReward",
}


def make_reward(name: str, **options: Any) -> Reward:
    """The reward called ``name`` built with ``options`` (an unknown name lists the valid ones)."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; valid: {', '.join(REWARDS)}")
    module, cls = REWARDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
