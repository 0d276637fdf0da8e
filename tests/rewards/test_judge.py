"""The generative reward model: score parsing, a callable judge, the openai client against a mock
endpoint, and the length-bias monitor."""

from __future__ import annotations

import json
import warnings

import pytest

from openm1.rewards.judge import JudgeReward, LengthBiasMonitor, LengthBiasWarning, openai_judge, parse_score


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The answer matches.\nScore: 8", 0.8),
        ("**Score:** 10", 1.0),
        ("score = 7/10 overall", 0.7),
        ('{"score": 3, "why": "partly"}', 0.3),
        ("Rating: [[9]]", 0.9),
        ("I give it 4/5", 0.8),
        ("first I thought Score: 2, but finally Score: 6", 0.6),
        ("\\boxed{5}", 0.5),
        ("7", 0.7),
    ],
)
def test_parse_score(text, expected):
    assert parse_score(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "no idea", "Score: 15", "Score: -1", None, "I give it 6/0"])
def test_unparseable_or_out_of_range_scores_are_none(text):
    assert parse_score(text) is None


def test_callable_judge_sees_prompt_reference_and_answer_only():
    seen = []

    def judge(text: str) -> str:
        seen.append(text)
        return "Correct.\nScore: 9"

    reward = JudgeReward(judge, monitor=None)
    out = reward("What is 2+2?", "<think>secret scratch</think>It is 4.", "4")
    assert out.score == pytest.approx(0.9)
    assert "What is 2+2?" in seen[0] and "It is 4." in seen[0] and "secret scratch" not in seen[0]


def test_unparseable_judge_output_scores_zero_with_reason():
    out = JudgeReward(lambda t: "hmm, hard to say", monitor=None)("q", "a", "ref")
    assert out.score == 0.0 and "could not parse" in out.details["reason"]


def test_openai_compatible_endpoint_through_the_real_client():
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")
    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append((request.url.path, body))
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "Matches the reference.\nScore: 7"},
                    }
                ],
            },
        )

    client = openai.OpenAI(
        base_url="http://judge.invalid/v1",
        api_key="k",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    reward = JudgeReward(openai_judge("judge-model", client=client), monitor=None)
    out = reward("Name a prime.", "7", "any prime")
    assert out.score == pytest.approx(0.7)
    path, body = requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "judge-model" and body["temperature"] == 0.0
    assert "Name a prime." in body["messages"][0]["content"]


def test_length_bias_monitor_warns_past_threshold_once_per_crossing():
    mon = LengthBiasMonitor(window=50, threshold=0.5, min_samples=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(20):  # each length once with reward 0 and once with 1: uncorrelated
            mon.update(i % 2, 100 + 10 * (i // 2))
    assert mon.correlation == pytest.approx(0.0, abs=1e-12)
    with pytest.warns(LengthBiasWarning, match="correlate with response length"):
        for i in range(40):  # longer answers get higher rewards
            mon.update(i / 40, 100 + 10 * i)
    assert mon.correlation > 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning while it stays above
        mon.update(1.0, 600)


def test_judge_reward_feeds_the_monitor():
    mon = LengthBiasMonitor(window=8, threshold=0.5, min_samples=4)
    reward = JudgeReward(lambda t: f"Score: {min(10, t.count('x'))}", monitor=mon)
    with pytest.warns(LengthBiasWarning):
        for n in range(1, 9):
            out = reward("q", "x" * n, "ref")
    assert out.details["length_correlation"] == pytest.approx(1.0)
