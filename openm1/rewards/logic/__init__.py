"""Logic puzzles: seeded generators, exact verifiers, a reward, and an optional reasoning-gym adapter."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from openm1.rewards.base import RewardResult
from openm1.rewards.format import boxed_answers
from openm1.rewards.logic.puzzles import FAMILIES, MAX_DIFFICULTY, Family, Puzzle, family, generate

__all__ = [
    "FAMILIES",
    "MAX_DIFFICULTY",
    "Family",
    "LogicReward",
    "Puzzle",
    "extract_answer",
    "family",
    "generate",
]


def extract_answer(response: str) -> str | None:
    """The final answer after any ``</think>``: the last ``<answer>...</answer>``, else the last
    ``\\boxed{}``, else what follows the last ``Answer:``; None when there is none."""
    tail = response.rsplit("</think>", 1)[-1]
    tags = re.findall(r"<answer>(.*?)</answer>", tail, re.DOTALL)
    if tags:
        return tags[-1].strip()
    boxed = [b for b in boxed_answers(tail) if b is not None]
    if boxed:
        return boxed[-1].strip()
    m = re.findall(r"answer\s*:\s*(.+)", tail, re.IGNORECASE)
    return m[-1].strip() if m else None


@dataclass
class LogicReward:
    """1.0 when the extracted answer passes the family's exact verifier. ``reference`` is the
    :class:`Puzzle` (or a dict with its ``family`` and ``data``)."""

    def __call__(self, prompt: str, response: str, reference: Any, **meta: Any) -> RewardResult:
        if isinstance(reference, Puzzle):
            fam, data = family(reference.family), reference.data
        elif isinstance(reference, dict) and "family" in reference and "data" in reference:
            fam, data = family(reference["family"]), reference["data"]
        else:
            raise TypeError("LogicReward's reference must be a Puzzle or {'family': ..., 'data': ...}")
        answer = extract_answer(response)
        if answer is None:
            return RewardResult(0.0, {"reason": "no answer found (expected 'Answer: ...')"})
        ok = fam.check(data, answer)
        return RewardResult(float(ok), {"answer": answer, "reason": "" if ok else "wrong answer"})
