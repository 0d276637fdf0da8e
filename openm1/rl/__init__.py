"""Reinforcement learning: CISPO and its baselines (losses), advantages, the task curriculum, rollouts
through the generation engine, the staged generation length, and the trainer."""

from __future__ import annotations

from openm1.rl.advantages import dynamic_sampling, group_advantages, overlong_penalty, per_token
from openm1.rl.config import RLConfig, RLConfigError
from openm1.rl.length import LengthSchedule
from openm1.rl.logprobs import token_logprobs
from openm1.rl.losses import ALGORITHMS, CISPO_EPS_HIGH, LossError, policy_loss
from openm1.rl.rollout import Rollout, rollout, score_rollout
from openm1.rl.trainer import RLTrainer

__all__ = [
    "ALGORITHMS",
    "CISPO_EPS_HIGH",
    "LengthSchedule",
    "LossError",
    "RLConfig",
    "RLConfigError",
    "RLTrainer",
    "Rollout",
    "dynamic_sampling",
    "group_advantages",
    "overlong_penalty",
    "per_token",
    "policy_loss",
    "rollout",
    "score_rollout",
    "token_logprobs",
]
