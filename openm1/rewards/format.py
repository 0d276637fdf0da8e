"""The format reward: one ``<think>...</think>`` block first, then exactly one final answer.

M1's chat format puts the reasoning in ``<think>...</think>``; the answer after it is either a single
``\\boxed{...}`` (``answer="boxed"``, the math convention) or a single ``<answer>...</answer>``
(``answer="tag"``). Nested braces inside ``\\boxed{}`` are matched properly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from openm1.rewards.base import RewardResult

_THINK = re.compile(r"\A\s*<think>(.*?)</think>(.*)\Z", re.DOTALL)


def boxed_answers(text: str) -> list[str | None]:
    """Contents of every ``\\boxed{...}`` in ``text`` (brace-matched); None for an unclosed one."""
    out: list[str | None] = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end() : i - 1] if depth == 0 else None)
    return out


@dataclass
class FormatReward:
    """1.0 for ``<think>reasoning</think>`` followed by exactly one non-empty final answer, else 0.0."""

    answer: Literal["boxed", "tag"] = "boxed"

    def __post_init__(self) -> None:
        if self.answer not in ("boxed", "tag"):
            raise ValueError(f"answer must be 'boxed' or 'tag', got {self.answer!r}")

    def __call__(self, prompt: str, response: str, reference: Any = None, **meta: Any) -> RewardResult:
        m = _THINK.match(response)
        if not m:
            return RewardResult(
                0.0, {"reason": "the response does not start with a <think>...</think> block"}
            )
        thought, tail = m.group(1), m.group(2)
        if not thought.strip():
            return RewardResult(0.0, {"reason": "the <think> block is empty"})
        if "<think>" in thought or "<think>" in tail or "</think>" in tail:
            return RewardResult(0.0, {"reason": "more than one <think> block"})
        if self.answer == "boxed":
            found = boxed_answers(tail)
            if any(a is None for a in found):
                return RewardResult(0.0, {"reason": "unclosed \\boxed{"})
        else:
            found = re.findall(r"<answer>(.*?)</answer>", tail, re.DOTALL)
            if tail.count("<answer>") != len(found):
                return RewardResult(0.0, {"reason": "unclosed <answer>"})
        if len(found) != 1:
            return RewardResult(0.0, {"reason": f"expected exactly one final answer, found {len(found)}"})
        if not found[0].strip():
            return RewardResult(0.0, {"reason": "the final answer is empty"})
        return RewardResult(1.0, {"answer": found[0].strip()})
