"""An adapter to reasoning-gym (over a hundred generated task families, each with its own verifier).

Optional: ``pip install 'openm1[gym]'``. Tasks become ``(prompt, reference)`` pairs whose reference is
the reasoning-gym entry; :class:`ReasoningGymReward` scores with the dataset's own ``score_answer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openm1.rewards.base import RewardResult
from openm1.rewards.logic import extract_answer


def _reasoning_gym():
    try:
        import reasoning_gym
    except ImportError as e:
        raise ImportError(
            "the reasoning-gym adapter needs the 'gym' extra: pip install 'openm1[gym]' (or reasoning-gym)"
        ) from e
    return reasoning_gym


def task_names() -> list[str]:
    """The task families reasoning-gym offers."""
    return sorted(_reasoning_gym().factory.DATASETS)


@dataclass
class ReasoningGymTasks:
    """``size`` tasks of reasoning-gym family ``name``, generated with ``seed`` (extra keyword options go
    to the dataset's config, e.g. a difficulty range). Indexable; each item is ``(prompt, entry)``."""

    name: str
    size: int = 100
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rg = _reasoning_gym()
        if self.name not in rg.factory.DATASETS:
            raise ValueError(
                f"unknown reasoning-gym task {self.name!r}; see openm1.rewards.logic.gym.task_names()"
            )
        self.dataset = rg.create_dataset(self.name, size=self.size, seed=self.seed, **self.config)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[str, dict[str, Any]]:
        entry = self.dataset[i]
        prompt = entry["question"] + " Give only the final answer after 'Answer:'."
        return prompt, {"gym_task": self.name, "entry": entry, "dataset": self.dataset}


@dataclass
class ReasoningGymReward:
    """Scores the extracted final answer with the reasoning-gym dataset's own verifier (in [0, 1])."""

    def __call__(self, prompt: str, response: str, reference: Any, **meta: Any) -> RewardResult:
        if not isinstance(reference, dict) or "entry" not in reference or "dataset" not in reference:
            raise TypeError(
                "ReasoningGymReward's reference must be the dict a ReasoningGymTasks item carries"
            )
        answer = extract_answer(response)
        if answer is None:
            return RewardResult(0.0, {"reason": "no answer found (expected 'Answer: ...')"})
        score = float(reference["dataset"].score_answer(answer, reference["entry"]))
        return RewardResult(score, {"answer": answer, "task": reference.get("gym_task")})
