"""The reward protocol, and a guard that turns a reward that raises or hangs into score 0 with the
reason recorded, so one bad sample never stops an RL run."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class RewardResult:
    """A score (usually in [0, 1]) and whatever explains it (extracted answer, failure reason...)."""

    score: float
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Reward(Protocol):
    """``reward(prompt, response, reference, **meta) -> RewardResult``; any callable of this shape."""

    def __call__(self, prompt: str, response: str, reference: Any, **meta: Any) -> RewardResult: ...


@dataclass
class Guarded:
    """Wrap a reward: an exception, a hang past ``timeout_s`` or a non-finite / non-numeric score all
    give ``RewardResult(0.0, {"error": ...})``.

    The reward runs in a daemon thread; on timeout the thread is abandoned, not killed (Python cannot
    kill threads), so a reward that can truly hang forever should bound itself too (the code sandbox
    kills its subprocess; the judge sets a request timeout).
    """

    reward: Reward
    timeout_s: float | None = 30.0
    name: str = ""

    def __call__(self, prompt: str, response: str, reference: Any, **meta: Any) -> RewardResult:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = self.reward(prompt, response, reference, **meta)
            except BaseException as e:  # noqa: BLE001 - any failure of a reward is a score of 0
                box["error"] = e

        if self.timeout_s is None:
            target()
        else:
            t = threading.Thread(target=target, daemon=True, name=f"reward-{self.name or 'guarded'}")
            t.start()
            t.join(self.timeout_s)
            if t.is_alive():
                return RewardResult(0.0, {"error": f"timeout: no result after {self.timeout_s}s"})
        if "error" in box:
            e = box["error"]
            return RewardResult(0.0, {"error": f"{type(e).__name__}: {e}"})
        return _validated(box.get("result"))


def _validated(result: Any) -> RewardResult:
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        result = RewardResult(float(result))
    if not isinstance(result, RewardResult):
        return RewardResult(0.0, {"error": f"reward returned {type(result).__name__}, not a RewardResult"})
    try:
        score = float(result.score)
    except (TypeError, ValueError):
        return RewardResult(0.0, {"error": f"non-numeric score {result.score!r}", **result.details})
    if not math.isfinite(score):
        return RewardResult(0.0, {"error": f"non-finite score {score}", **result.details})
    return RewardResult(score, result.details)


def guarded(reward: Reward, timeout_s: float | None = 30.0) -> Guarded:
    """``Guarded(reward, timeout_s)``, named after the reward's class or function."""
    return Guarded(reward, timeout_s, getattr(reward, "__name__", type(reward).__name__))


@dataclass
class WeightedSum:
    """``sum(weight * reward)`` over several rewards (e.g. math correctness plus a small format bonus);
    each part's details are kept under its name."""

    parts: dict[str, tuple[Reward, float]]

    def __call__(self, prompt: str, response: str, reference: Any, **meta: Any) -> RewardResult:
        total, details = 0.0, {}
        for name, (reward, weight) in self.parts.items():
            out = _validated(reward(prompt, response, reference, **meta))
            total += weight * out.score
            details[name] = {"score": out.score, **out.details}
        return RewardResult(total, details)


def score_batch(
    reward: Reward,
    prompts: list[str],
    responses: list[str],
    references: list[Any],
    timeout_s: float | None = 30.0,
    max_workers: int = 8,
    metas: list[dict[str, Any]] | None = None,
) -> list[RewardResult]:
    """Score a rollout batch concurrently (the sandbox and a judge endpoint spend their time waiting),
    each sample guarded: results keep the input order, and failures are 0 with the reason."""
    n = len(responses)
    if not len(prompts) == len(references) == n or (metas is not None and len(metas) != n):
        raise ValueError(
            f"prompts, responses, references (and metas) must have one entry per sample: "
            f"{len(prompts)}, {n}, {len(references)}" + ("" if metas is None else f", {len(metas)}")
        )
    g = reward if isinstance(reward, Guarded) else guarded(reward, timeout_s)
    metas = metas or [{} for _ in range(n)]
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, n or 1))) as pool:
        futures = [
            pool.submit(g, p, r, ref, **m)
            for p, r, ref, m in zip(prompts, responses, references, metas, strict=True)
        ]
        return [f.result() for f in futures]
