"""Math answers checked with math-verify: the final answer (preferably ``\\boxed{...}``) is extracted
from the response after any ``<think>`` block and compared with the reference by symbolic and
numeric equivalence (``1/2`` = ``0.5`` = ``\\frac{1}{2}``; sets, intervals, matrices, equations).

Needs the ``rl`` extra (``pip install 'openm1[rl]'``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from openm1.rewards.base import RewardResult


def _math_verify():
    try:
        import math_verify
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("the math reward needs math-verify: pip install 'openm1[rl]'") from e
    return math_verify


def final_part(response: str) -> str:
    """The text after the last ``</think>`` (the whole response when there is none)."""
    return response.rsplit("</think>", 1)[-1]


@dataclass
class MathReward:
    """1.0 when the response's final answer equals the reference, else 0.0 (with the reason).

    ``boxed_only``: accept only an answer in ``\\boxed{}`` (a stricter format contract); otherwise
    math-verify also takes "the final answer is ..." and a trailing expression, boxed first.
    """

    boxed_only: bool = False
    timeout_s: int = 5
    """math-verify's own per-call timeout (signal-based: used only on the main thread)."""

    def __call__(self, prompt: str, response: str, reference: Any, **meta: Any) -> RewardResult:
        mv = _math_verify()
        # math-verify's timeouts use signal.alarm, which works only on the main thread; elsewhere
        # (inside Guarded) the caller's timeout bounds the call instead.
        timeout = self.timeout_s if threading.current_thread() is threading.main_thread() else None
        ref = str(reference).strip()
        if "\\boxed" not in ref and not ref.startswith("$"):
            ref = f"${ref}$"
        gold = mv.parse(ref, parsing_timeout=timeout)
        if not gold:
            raise ValueError(f"math-verify cannot parse the reference answer {reference!r}")
        latex = mv.LatexExtractionConfig(boxed_match_priority=0)
        if self.boxed_only:
            latex = mv.LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)
            configs = [latex]
        else:
            configs = [latex, mv.ExprExtractionConfig()]
        text = final_part(response)
        if self.boxed_only and "\\boxed" not in text:
            return RewardResult(0.0, {"reason": "no \\boxed{} answer"})
        pred = mv.parse(text, extraction_config=configs, parsing_timeout=timeout)
        if not pred:
            return RewardResult(0.0, {"reason": "no answer found"})
        ok = mv.verify(gold, pred, timeout_seconds=timeout)
        return RewardResult(
            float(ok),
            {
                "answer": str(pred[-1]),
                "reference": str(gold[-1]),
                "reason": "" if ok else "answer differs from the reference",
            },
        )
