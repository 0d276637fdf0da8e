"""The sampler: inverse-CDF draws give exact frequencies for evenly spaced uniforms, so the support and
the weights of temperature, top-k and top-p are checked without randomness."""

from __future__ import annotations

import math

import pytest
import torch

from openm1.generate.sampling import SamplingParams, make_generator, sample

PROBS = torch.tensor([0.1, 0.5, 0.2, 0.0, 0.2])  # token 3 impossible


def counts(n=1000, temperature=1.0, top_k=0, top_p=1.0, probs=PROBS):
    logits = torch.log(probs).expand(n, -1).clone()
    u = (torch.arange(n) + 0.5) / n
    tokens = sample(
        logits,
        torch.full((n,), float(temperature)),
        torch.full((n,), top_k, dtype=torch.long),
        torch.full((n,), float(top_p)),
        u,
    )
    return torch.bincount(tokens, minlength=len(probs)).tolist()


def test_plain_sampling_follows_the_distribution():
    assert counts() == [100, 500, 200, 0, 200]


def test_top_k_keeps_the_k_most_likely_renormalised():
    assert counts(top_k=2)[1] == round(1000 * 0.5 / 0.7) and counts(top_k=2)[0] == 0
    assert sum(c > 0 for c in counts(top_k=2)) == 2
    assert counts(top_k=1) == [0, 1000, 0, 0, 0]


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert counts(top_p=0.5) == [0, 1000, 0, 0, 0]  # 0.5 alone reaches 0.5
    c = counts(top_p=0.6)  # 0.5 + one of the 0.2s
    assert sum(x > 0 for x in c) == 2 and c[1] == round(1000 * 0.5 / 0.7)
    assert counts(top_p=0.95) == [100, 500, 200, 0, 200]  # needs all four possible tokens


def test_temperature_sharpens_and_flattens():
    cold, hot = counts(temperature=0.5), counts(temperature=2.0)
    assert cold[1] > 500 > hot[1]
    expected_hot = (PROBS**0.5) / (PROBS**0.5).sum()
    assert max(abs(h - 1000 * float(p)) for h, p in zip(hot, expected_hot, strict=True)) <= 1


def test_greedy_rows_take_the_argmax_beside_sampled_rows():
    logits = torch.log(PROBS).expand(2, -1).clone()
    tokens = sample(
        logits,
        torch.tensor([0.0, 1.0]),
        torch.zeros(2, dtype=torch.long),
        torch.ones(2),
        torch.tensor([0.99, 0.99]),
    )
    assert tokens.tolist() == [1, 4]


def test_never_samples_outside_the_support():
    logits = torch.randn(64, 50)
    u = torch.tensor([math.nextafter(1.0, 0.0)] * 32 + [0.0] * 32)  # both ends of [0, 1)
    k = torch.full((64,), 3, dtype=torch.long)
    tokens = sample(logits, torch.ones(64), k, torch.ones(64), u)
    top3 = logits.topk(3).indices
    assert all(int(t) in top3[i].tolist() for i, t in enumerate(tokens))


def test_seeded_generators_repeat():
    a = [float(torch.rand((), generator=make_generator(7))) for _ in range(2)]
    assert a[0] == a[1]
    assert float(torch.rand((), generator=make_generator(8))) != a[0]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 1.5}, "top_k"),
        ({"logprobs": 50}, "logprobs"),
        ({"stop": [""]}, "stop"),
        ({"stop_token_ids": [999]}, "stop_token_ids"),
        ({"repetition_window": 0}, "repetition_window"),
    ],
)
def test_invalid_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs).validate(vocab_size=100)
