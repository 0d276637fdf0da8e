"""Group-relative advantages, dynamic sampling and overlong shaping, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from openm1.rl.advantages import (
    dynamic_sampling,
    group_advantages,
    overlong_penalty,
    per_token,
    shape_overlong,
)


def test_group_advantages_with_and_without_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 3.0])
    adv = group_advantages(rewards, group_size=4)
    s = math.sqrt(1 / 3)  # sample std of (1, 0, 0, 1)
    expected_g0 = [0.5 / (s + 1e-4), -0.5 / (s + 1e-4), -0.5 / (s + 1e-4), 0.5 / (s + 1e-4)]
    torch.testing.assert_close(adv[:4], torch.tensor(expected_g0))
    assert torch.all(adv[4:8] == 0)  # all equal: no signal
    raw = group_advantages(rewards, group_size=4, normalize_std=False)
    torch.testing.assert_close(raw[8:], torch.tensor([-0.75, -0.75, -0.75, 2.25]))
    assert group_advantages(rewards.view(3, 4), 4).shape == (3, 4)


def test_per_token_broadcast_zeroes_padding():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = per_token(torch.tensor([2.0, -1.0]), mask)
    assert out.tolist() == [[2.0, 2.0, 0.0], [-1.0, -1.0, -1.0]]


def test_dynamic_sampling_drops_groups_with_equal_rewards():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    f = dynamic_sampling(rewards, group_size=3)
    assert f.keep_groups.tolist() == [False, False, True]
    assert f.dropped == 2 and f.num_groups == 3
    assert f.keep_samples.tolist() == [False] * 6 + [True] * 3


def test_overlong_penalty_is_dapos_soft_punishment():
    lengths = torch.tensor([3, 6, 7, 8, 10, 11])
    # max 10, cache 4: free up to 6, then (6 - L) / 4, -1 beyond 10
    assert overlong_penalty(lengths, max_len=10, cache_len=4).tolist() == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    assert overlong_penalty(lengths, max_len=10, cache_len=0).tolist() == [0, 0, 0, 0, 0, -1.0]
    shaped = shape_overlong(torch.ones(6), lengths, 10, 4)
    assert shaped.tolist() == [1.0, 1.0, 0.75, 0.5, 0.0, 0.0]


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: group_advantages(torch.ones(7), 4), "multiple of group_size"),
        (lambda: group_advantages(torch.ones(4), 1), "group_size >= 2"),
        (lambda: group_advantages(torch.ones(2, 3), 4), "groups of 3"),
        (lambda: overlong_penalty(torch.ones(3), 10, 11), "cache_len must be in"),
        (lambda: per_token(torch.ones(3), torch.ones(2, 4)), "expected advantages"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
