"""The math reward on right, wrong and malformed answers (math-verify does the equivalence)."""

from __future__ import annotations

import pytest

pytest.importorskip("math_verify")

from openm1.rewards import guarded  # noqa: E402
from openm1.rewards.math import MathReward  # noqa: E402


@pytest.mark.parametrize(
    "response,reference",
    [
        ("<think>1/2 = 0.5</think> The answer is $\\boxed{\\frac{1}{2}}$.", "0.5"),
        ("so $\\boxed{(x+1)^2}$", "x^2 + 2x + 1"),
        ("$\\boxed{\\{1, 2\\}}$", "\\{2, 1\\}"),
        ("The final answer is $\\boxed{3\\sqrt{2}}$", "\\sqrt{18}"),
    ],
)
def test_right_answers(response, reference):
    out = MathReward()("q", response, reference)
    assert out.score == 1.0, out.details


@pytest.mark.parametrize(
    "response,reference",
    [
        ("$\\boxed{3}$", "1/2"),
        # the reasoning's scratch answer does not count: only what follows </think>
        ("<think>maybe \\boxed{5}</think> I think $\\boxed{6}$", "5"),
    ],
)
def test_wrong_answers(response, reference):
    out = MathReward()("q", response, reference)
    assert out.score == 0.0 and out.details["reason"] == "answer differs from the reference"


@pytest.mark.parametrize("response", ["I have no idea.", "\\boxed{", ""])
def test_malformed_answers(response):
    out = MathReward()("q", response, "5")
    assert out.score == 0.0 and out.details["reason"] == "no answer found"


def test_boxed_only_requires_a_box():
    assert MathReward()("q", "the answer: $5$", "5").score == 1.0
    out = MathReward(boxed_only=True)("q", "the answer: $5$", "5")
    assert out.score == 0.0 and "boxed" in out.details["reason"]


def test_works_inside_the_guard_thread_and_a_bad_reference_is_reported():
    assert guarded(MathReward())("q", "$\\boxed{4}$", "4").score == 1.0
    out = guarded(MathReward())("q", "$\\boxed{4}$", "")
    assert out.score == 0.0 and "cannot parse the reference" in out.details["error"]
