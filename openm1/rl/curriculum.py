"""The task curriculum: rule-verified tasks first, model-judged ones mixed in on a schedule.

The paper trained first on reasoning tasks with rule-based rewards (math, logic, code), then mixed in
general tasks scored by a generative reward model. Here the share of judged tasks in a batch follows
:class:`MixSchedule` (0 until ``start_step``, then a linear ramp to ``final_fraction`` over
``ramp_steps``); the number of judged tasks in a batch is ``round(fraction * size)``, exactly, so the
mixture carries no sampling noise. Batches are a pure function of ``(seed, step)``: resuming at step
``s`` gives the same tasks as the uninterrupted run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from openm1.rewards.base import Reward

KINDS = ("rule", "judged")


@dataclass
class Task:
    """A prompt, what its reward compares against, and the reward that scores a response to it."""

    prompt: str
    reference: Any
    reward: Reward
    source: str
    kind: Literal["rule", "judged"]
    meta: dict[str, Any] = field(default_factory=dict)


class TaskSource(Protocol):
    """Anything with a ``name``, a ``kind`` (``"rule"`` or ``"judged"``) and ``sample(rng) -> Task``."""

    name: str
    kind: str

    def sample(self, rng: random.Random) -> Task: ...


@dataclass
class ListSource:
    """Tasks drawn uniformly from a fixed list of ``(prompt, reference)`` pairs (a prompt set)."""

    name: str
    items: Sequence[tuple[str, Any]]
    reward: Reward
    kind: str = "rule"

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError(f"task source {self.name!r} has no items")

    def sample(self, rng: random.Random) -> Task:
        prompt, reference = self.items[rng.randrange(len(self.items))]
        return Task(prompt, reference, self.reward, self.name, self.kind)  # type: ignore[arg-type]


@dataclass
class PuzzleSource:
    """Freshly generated logic puzzles of the given families at ``difficulty`` (rule-verified)."""

    families: Sequence[str]
    difficulty: int = 1
    name: str = "logic"
    kind: str = "rule"

    def __post_init__(self) -> None:
        from openm1.rewards.logic import LogicReward, family

        self._families = [family(f) for f in self.families]  # validates the names
        if not self._families:
            raise ValueError("PuzzleSource needs at least one family")
        self._reward = LogicReward()

    def sample(self, rng: random.Random) -> Task:
        fam = self._families[rng.randrange(len(self._families))]
        puzzle = fam.generate(rng.getrandbits(32), self.difficulty)
        return Task(
            puzzle.prompt,
            puzzle,
            self._reward,
            self.name,
            self.kind,  # type: ignore[arg-type]
            {"family": fam.name, "difficulty": self.difficulty},
        )


@dataclass
class MixSchedule:
    """Fraction of model-judged tasks per step: 0 before ``start_step``, then linear to ``final_fraction``
    over ``ramp_steps`` (a step change when ``ramp_steps`` is 0), constant after."""

    start_step: int = 0
    ramp_steps: int = 100
    final_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.start_step < 0 or self.ramp_steps < 0:
            raise ValueError("start_step and ramp_steps must be >= 0")
        if not 0.0 <= self.final_fraction <= 1.0:
            raise ValueError(f"final_fraction must be in [0, 1], got {self.final_fraction}")

    def judged_fraction(self, step: int) -> float:
        if step < self.start_step:
            return 0.0
        if self.ramp_steps == 0:
            return self.final_fraction
        return self.final_fraction * min(1.0, (step - self.start_step + 1) / self.ramp_steps)


@dataclass
class Curriculum:
    """Batches of tasks mixing rule-verified and model-judged sources per :class:`MixSchedule`.

    ``weights`` (by source name, default 1) set how often each source of a kind is drawn."""

    rule: Sequence[TaskSource]
    judged: Sequence[TaskSource] = ()
    schedule: MixSchedule = field(default_factory=MixSchedule)
    seed: int = 0
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rule:
            raise ValueError(
                "a curriculum needs at least one rule-verified source: the paper starts with them"
            )
        for kind, sources in (("rule", self.rule), ("judged", self.judged)):
            for s in sources:
                if s.kind != kind:
                    raise ValueError(f"source {s.name!r} has kind {s.kind!r} but was given as {kind!r}")
        names = [s.name for s in (*self.rule, *self.judged)]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        unknown = set(self.weights) - set(names)
        if unknown:
            raise ValueError(f"weights name unknown sources {sorted(unknown)}; sources: {names}")
        if any(w <= 0 for w in self.weights.values()):
            raise ValueError("source weights must be positive")

    def judged_fraction(self, step: int) -> float:
        return self.schedule.judged_fraction(step) if self.judged else 0.0

    def batch(self, step: int, size: int) -> list[Task]:
        """The ``size`` tasks of ``step``: deterministic in ``(seed, step)``, judged ones shuffled in."""
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        rng = random.Random(f"curriculum:{self.seed}:{step}")
        n_judged = round(self.judged_fraction(step) * size)
        tasks = [self._draw(self.judged, rng) for _ in range(n_judged)]
        tasks += [self._draw(self.rule, rng) for _ in range(size - n_judged)]
        rng.shuffle(tasks)
        return tasks

    def _draw(self, sources: Sequence[TaskSource], rng: random.Random) -> Task:
        weights = [self.weights.get(s.name, 1.0) for s in sources]
        return rng.choices(list(sources), weights=weights)[0].sample(rng)
