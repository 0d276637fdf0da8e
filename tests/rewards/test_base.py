"""A reward that raises, hangs or returns garbage scores 0 with the reason; it never stops the run."""

from __future__ import annotations

import threading

import pytest

from openm1.rewards import Guarded, RewardResult, guarded


def test_a_good_reward_passes_through():
    r = guarded(lambda p, resp, ref, **m: RewardResult(1.0, {"x": 1}))
    assert r("p", "resp", "ref") == RewardResult(1.0, {"x": 1})
    assert guarded(lambda *a, **m: 0.5)("p", "r", None).score == 0.5  # plain numbers are accepted


def test_a_raising_reward_scores_zero_with_the_reason():
    def boom(prompt, response, reference, **meta):
        raise KeyError("missing field")

    out = guarded(boom)("p", "r", None)
    assert out.score == 0.0 and "KeyError" in out.details["error"] and "missing field" in out.details["error"]


def test_a_hanging_reward_times_out():
    release = threading.Event()

    def hang(prompt, response, reference, **meta):
        release.wait(30)
        return RewardResult(1.0)

    out = Guarded(hang, timeout_s=0.2)("p", "r", None)
    release.set()
    assert out.score == 0.0 and out.details["error"].startswith("timeout")


def test_non_finite_or_wrong_types_score_zero():
    assert (
        guarded(lambda *a, **m: RewardResult(float("nan")))("p", "r", None)
        .details["error"]
        .startswith("non-finite")
    )
    assert guarded(lambda *a, **m: "1.0")("p", "r", None).details["error"].startswith("reward returned str")
    assert (
        guarded(lambda *a, **m: RewardResult("high"))("p", "r", None)
        .details["error"]
        .startswith("non-numeric")
    )


def test_score_batch_keeps_order_and_isolates_failures():
    from openm1.rewards import score_batch

    def reward(prompt, response, reference, **meta):
        if response == "boom":
            raise RuntimeError("bad sample")
        return RewardResult(float(response == reference), {"bonus": meta.get("bonus")})

    out = score_batch(
        reward,
        ["p"] * 4,
        ["a", "boom", "c", "x"],
        ["a", "b", "c", "d"],
        metas=[{"bonus": i} for i in range(4)],
        max_workers=3,
    )
    assert [o.score for o in out] == [1.0, 0.0, 1.0, 0.0]
    assert "bad sample" in out[1].details["error"] and out[2].details["bonus"] == 2
    with pytest.raises(ValueError, match="one entry per sample"):
        score_batch(reward, ["p"], ["a", "b"], ["a", "b"])


def test_weighted_sum_and_registry():
    from openm1.rewards import REWARDS, WeightedSum, make_reward

    both = WeightedSum({"logic": (make_reward("logic"), 1.0), "format": (make_reward("format"), 0.1)})
    ref = {"family": "parity", "data": {"bits": "11"}}
    out = both("q", "<think>two ones</think><answer>even</answer>", ref)
    assert out.score == pytest.approx(1.0) and out.details["format"]["score"] == 0.0  # boxed expected
    out = both("q", "<think>two ones</think>\\boxed{even}", ref)
    assert out.score == pytest.approx(1.1)
    assert set(REWARDS) >= {"math", "format", "code", "logic", "judge"}
    with pytest.raises(ValueError, match="unknown reward 'regex'; valid: math"):
        make_reward("regex")
