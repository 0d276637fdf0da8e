"""The curriculum: rule tasks first, judged ones on a schedule, deterministic in (seed, step)."""

from __future__ import annotations

import pytest

from openm1.rewards.base import RewardResult
from openm1.rewards.logic import LogicReward
from openm1.rl.curriculum import Curriculum, ListSource, MixSchedule, PuzzleSource


def _judge(prompt, response, reference, **meta):
    return RewardResult(0.5)


def make(seed=0, **sched):
    rule = [PuzzleSource(["sorting", "parity"], difficulty=1), PuzzleSource(["reversal"], name="rev")]
    judged = [
        ListSource("chat", [("Write a haiku.", "any haiku"), ("Greet me.", "hello")], _judge, kind="judged")
    ]
    return Curriculum(rule, judged, MixSchedule(**sched), seed=seed)


def test_schedule_starts_rule_only_and_ramps_linearly():
    s = MixSchedule(start_step=10, ramp_steps=4, final_fraction=0.5)
    assert [s.judged_fraction(t) for t in (0, 9, 10, 11, 12, 13, 50)] == [0, 0, 0.125, 0.25, 0.375, 0.5, 0.5]
    assert MixSchedule(start_step=3, ramp_steps=0, final_fraction=0.2).judged_fraction(3) == 0.2


def test_batches_follow_the_schedule_exactly():
    c = make(start_step=5, ramp_steps=10, final_fraction=0.5)
    assert all(t.kind == "rule" for step in range(5) for t in c.batch(step, 16))
    for step, n in ((5, 1), (9, 4), (13, 7), (14, 8), (100, 8)):  # round(16 * 0.5 * min(1, (step - 4) / 10))
        assert sum(t.kind == "judged" for t in c.batch(step, 16)) == n


def test_deterministic_in_seed_and_step_and_rewards_work():
    a, b, other = make(seed=1), make(seed=1), make(seed=2)
    batch = [(t.prompt, t.source) for t in a.batch(50, 12)]
    assert batch == [(t.prompt, t.source) for t in b.batch(50, 12)]  # a fresh object, as after a resume
    assert batch != [(t.prompt, t.source) for t in other.batch(50, 12)]
    assert batch != [(t.prompt, t.source) for t in a.batch(51, 12)]
    for t in a.batch(0, 8):
        assert isinstance(t.reward, LogicReward)
        assert t.reward(t.prompt, f"Answer: {t.reference.answer}", t.reference).score == 1.0


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: Curriculum([]), "at least one rule-verified source"),
        (lambda: Curriculum([ListSource("j", [("p", "r")], _judge, kind="judged")]), "given as 'rule'"),
        (lambda: MixSchedule(final_fraction=1.5), "final_fraction"),
        (lambda: PuzzleSource(["sudoku"]), "unknown puzzle family 'sudoku'"),
        (lambda: Curriculum([PuzzleSource(["parity"])], weights={"nope": 1.0}), "unknown sources"),
    ],
)
def test_bad_configuration(build, match):
    with pytest.raises(ValueError, match=match):
        build()
