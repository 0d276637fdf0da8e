"""The format reward: a <think> block, then exactly one final answer."""

from __future__ import annotations

import pytest

from openm1.rewards.format import FormatReward, boxed_answers


def test_right_format():
    out = FormatReward()("q", "<think>2+2 is 4</think>\nSo the answer is \\boxed{\\frac{8}{2}}.", None)
    assert out.score == 1.0 and out.details["answer"] == "\\frac{8}{2}"
    assert FormatReward("tag")("q", "<think>x</think><answer>4</answer>", None).score == 1.0


@pytest.mark.parametrize(
    "response,reason",
    [
        ("The answer is \\boxed{4}", "does not start with a <think>"),
        ("<think></think>\\boxed{4}", "empty"),
        ("<think>a</think><think>b</think>\\boxed{4}", "more than one <think>"),
        ("<think>a</think> \\boxed{4} or \\boxed{5}", "found 2"),
        ("<think>a</think> no answer here", "found 0"),
        ("<think>a</think> \\boxed{4", "unclosed"),
        ("<think>a</think> \\boxed{ }", "empty"),
        ("<think>a", "does not start with a <think>"),
    ],
)
def test_wrong_or_malformed_format(response, reason):
    out = FormatReward()("q", response, None)
    assert out.score == 0.0 and reason in out.details["reason"]


def test_boxed_answers_match_nested_braces():
    assert boxed_answers("\\boxed{\\frac{1}{2}} and \\boxed{x}") == ["\\frac{1}{2}", "x"]
    assert boxed_answers("\\boxed{a{b}") == [None]


def test_unknown_answer_style_is_refused():
    with pytest.raises(ValueError, match="'boxed' or 'tag'"):
        FormatReward("xml")
