"""The reasoning-gym adapter (optional extra 'gym')."""

from __future__ import annotations

import pytest

pytest.importorskip("reasoning_gym")

from openm1.rewards.logic.gym import ReasoningGymReward, ReasoningGymTasks, task_names  # noqa: E402


def test_tasks_are_seeded_and_scored_by_reasoning_gyms_verifier():
    assert "basic_arithmetic" in task_names() and len(task_names()) > 100
    tasks = ReasoningGymTasks("basic_arithmetic", size=5, seed=3)
    again = ReasoningGymTasks("basic_arithmetic", size=5, seed=3)
    assert [tasks[i][0] for i in range(5)] == [again[i][0] for i in range(5)]
    reward = ReasoningGymReward()
    for i in range(5):
        prompt, ref = tasks[i]
        answer = ref["entry"]["answer"]
        assert reward(prompt, f"<think>...</think>Answer: {answer}", ref).score == 1.0
        assert reward(prompt, f"Answer: {answer}1", ref).score < 1.0
        assert reward(prompt, "no idea", ref).score == 0.0


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown reasoning-gym task"):
        ReasoningGymTasks("no_such_task")
