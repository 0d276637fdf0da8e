"""Reinforcement learning: CISPO and its baselines (losses), advantages, and the task curriculum."""

from __future__ import annotations

from openm1.rl.advantages import dynamic_sampling, group_advantages, overlong_penalty, per_token
from openm1.rl.logprobs import token_logprobs
from openm1.rl.losses import ALGORITHMS, CISPO_EPS_HIGH, LossError, policy_loss

__all__ = [
    "ALGORITHMS",
    "CISPO_EPS_HIGH",
    "LossError",
    "dynamic_sampling",
    "group_advantages",
    "overlong_penalty",
    "per_token",
    "policy_loss",
    "token_logprobs",
]
