"""Inference FLOPs: the paper's Figure 1 claims under the chosen convention, and the arithmetic."""

from __future__ import annotations

import pytest

from openm1.analysis.flops import (
    CLAIM_64K,
    CLAIM_100K,
    CONVENTIONS,
    DEFAULT_CONVENTION,
    DEFAULT_LENGTHS,
    DeepSeekR1,
    claims,
    compare,
    generation_flops,
    get_convention,
    m1_token_cost,
    r1_token_cost,
    ratio,
)
from openm1.analysis.params import count_params
from openm1.config import preset


def test_paper_claims_hold_under_chosen_convention():
    conv = get_convention(DEFAULT_CONVENTION)
    assert ratio(CLAIM_64K, conv) < 0.5
    assert 0.2 <= ratio(CLAIM_100K, conv) <= 0.3
    assert claims(conv)["below_half_at_64k"] and claims(conv)["about_quarter_at_100k"]
    assert get_convention("paper") == conv


@pytest.mark.parametrize("name", list(CONVENTIONS))
@pytest.mark.parametrize("lm_head", [True, False])
def test_ratio_falls_with_length(name: str, lm_head: bool):
    ratios = [r.ratio for r in compare(DEFAULT_LENGTHS, get_convention(name, lm_head))]
    assert all(a > b for a, b in zip(ratios[:-1], ratios[1:], strict=True))


def test_only_the_chosen_convention_reproduces_both_claims():
    held = {name: claims(get_convention(name)) for name in CONVENTIONS}
    assert [n for n, c in held.items() if c["below_half_at_64k"] and c["about_quarter_at_100k"]] == [
        DEFAULT_CONVENTION
    ]


def test_closed_forms_equal_explicit_sums():
    cost = m1_token_cost()
    for n, prompt in ((1, 0), (7, 0), (100, 13)):
        causal = sum(cost.at(prompt + t) for t in range(1, n + 1))
        assert generation_flops(cost, n, "causal", prompt) == pytest.approx(causal, rel=1e-12)
        assert generation_flops(cost, n, "square", prompt) == pytest.approx(
            n * cost.at(prompt + n), rel=1e-12
        )
    with pytest.raises(ValueError):
        generation_flops(cost, 1, "diagonal")


def test_per_token_terms():
    m1 = m1_token_cost()
    assert m1.linear == pytest.approx(2 * 45.9e9, rel=0.01)
    assert m1.linear < 2 * count_params(preset("minimax-m1")).active  # norms are not matmuls
    assert m1.per_position == 10 * 4 * 64 * 128
    assert m1.recurrent == 70 * 4 * 64 * 128 * 128
    un = r1_token_cost(convention=get_convention("unabsorbed-square"))
    ab = r1_token_cost(convention=get_convention("absorbed-square"))
    assert un.per_position == 61 * 2 * 128 * (192 + 128)
    assert ab.per_position == 61 * (2 * 128 * (512 + 64) + 2 * 128 * 512)
    assert un.linear == ab.linear


def test_r1_is_about_37b_active():
    r1 = DeepSeekR1()
    assert r1.active_matmul_params + 2 * r1.lm_head_params == pytest.approx(37e9, rel=0.03)


def test_lm_head_switch_and_unknown_convention():
    with_head = r1_token_cost(convention=get_convention(DEFAULT_CONVENTION, lm_head=True))
    without = r1_token_cost(convention=get_convention(DEFAULT_CONVENTION, lm_head=False))
    assert with_head.constant - without.constant == 2 * 129280 * 7168
    with pytest.raises(ValueError, match="unknown convention"):
        get_convention("flash")


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_ratio_falls_at_most_like_one_over_n(name: str):
    """docs/flops.md: from 64K to 100K the ratio can shrink by at most 64/100, with or without a prompt."""
    for prompt in (0, 10_000):
        conv = get_convention(name)
        assert ratio(CLAIM_100K, conv, prompt) / ratio(CLAIM_64K, conv, prompt) >= 64 / 100


def test_causal_needs_a_long_prompt_to_reach_a_quarter():
    """docs/flops.md: unabsorbed-causal reaches 25% at 100K only with a ~31K-token prompt."""
    conv = get_convention("unabsorbed-causal")
    assert ratio(CLAIM_100K, conv) == pytest.approx(0.3385, abs=5e-4)
    assert ratio(CLAIM_100K, conv, prompt=31619) == pytest.approx(0.25, abs=1e-4)
