"""A generative reward model: a judge model scores a response against a reference answer, and a monitor
watches whether the rewards have started to favour length.

The judge is any callable ``str -> str`` (a local model's generate wrapped in a function) or any
OpenAI-compatible chat endpoint through the ``openai`` client (``pip install 'openm1[rl]'``). The paper
found its generative reward model drifting toward longer answers during RL; the
:class:`LengthBiasMonitor` reports the rolling correlation of reward and length and warns past a
threshold, so the drift is seen before the policy exploits it.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openm1.rewards.base import RewardResult

DEFAULT_TEMPLATE = """You are grading an answer against a reference answer.

Question:
{prompt}

Reference answer:
{reference}

Answer to grade:
{response}

Judge whether the answer is correct and complete with respect to the reference; ignore style and length.
Reply with one line of reasoning, then a final line of the form "Score: N" with N an integer
from 0 to {max_score}."""

_NUM = r"([-+]?\d+(?:\.\d+)?)"
_PATTERNS = [
    re.compile(
        r"score\s*(?:\*\*)?\s*[:=]\s*(?:\*\*)?\s*" + _NUM + r"(?:\s*/\s*" + _NUM + r")?", re.IGNORECASE
    ),
    re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]"),
    re.compile(_NUM + r"\s*/\s*" + _NUM),
    re.compile(r"\\boxed\{\s*" + _NUM + r"\s*\}"),
]


class LengthBiasWarning(UserWarning):
    """Rewards and response lengths have become correlated past the monitor's threshold."""


def parse_score(text: str, max_score: float = 10.0) -> float | None:
    """A score in [0, 1] from judge output, or None when there is none: a JSON ``{"score": N}``, the last
    ``Score: N`` (or ``N/M``), ``[[N]]``, ``N/M`` or ``\\boxed{N}``, else a bare number on the last line.
    ``N`` is divided by ``M`` when given, else by ``max_score``; out-of-range values are rejected."""
    if not isinstance(text, str) or not text.strip():
        return None
    value, scale = None, max_score
    for m in re.finditer(r"\{[^{}]*\}", text):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("score"), (int, float)):
            value = float(obj["score"])
    if value is None:
        for pat in _PATTERNS:
            matches = pat.findall(text)
            if matches:
                last = matches[-1]
                num, den = (last, None) if isinstance(last, str) else (last[0], last[1] or None)
                value, scale = float(num), (float(den) if den else max_score)
                break
    if value is None:
        m = re.fullmatch(r"\s*" + _NUM + r"\s*\.?\s*", text.strip().splitlines()[-1])
        value = float(m.group(1)) if m else None
    if value is None or scale <= 0 or not 0 <= value <= scale:
        return None
    return value / scale


@dataclass
class LengthBiasMonitor:
    """Rolling Pearson correlation of reward and response length over the last ``window`` samples;
    warns (:class:`LengthBiasWarning`) when it exceeds ``threshold`` with ``min_samples`` or more."""

    window: int = 256
    threshold: float = 0.3
    min_samples: int = 32
    rewards: deque = field(init=False, repr=False)
    lengths: deque = field(init=False, repr=False)
    warned: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.window < 2 or self.min_samples < 2:
            raise ValueError("window and min_samples must be at least 2")
        self.rewards, self.lengths = deque(maxlen=self.window), deque(maxlen=self.window)

    def update(self, reward: float, length: float) -> float | None:
        """Record one sample; returns the current correlation (None until ``min_samples``)."""
        self.rewards.append(float(reward))
        self.lengths.append(float(length))
        corr = self.correlation
        if corr is not None and corr > self.threshold:
            if not self.warned:
                warnings.warn(
                    f"judge rewards correlate with response length (r = {corr:.2f} over the last "
                    f"{len(self.rewards)} samples > {self.threshold}): the reward model may favour length",
                    LengthBiasWarning,
                    stacklevel=2,
                )
            self.warned = True
        elif corr is not None:
            self.warned = False  # warn again on the next crossing
        return corr

    @property
    def correlation(self) -> float | None:
        n = len(self.rewards)
        if n < self.min_samples:
            return None
        mr, ml = sum(self.rewards) / n, sum(self.lengths) / n
        cov = sum((r - mr) * (x - ml) for r, x in zip(self.rewards, self.lengths, strict=True))
        vr = sum((r - mr) ** 2 for r in self.rewards)
        vl = sum((x - ml) ** 2 for x in self.lengths)
        return 0.0 if vr == 0 or vl == 0 else cov / math.sqrt(vr * vl)


def openai_judge(
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    client: Any = None,
    temperature: float = 0.0,
    max_tokens: int = 512,
    timeout_s: float = 60.0,
) -> Callable[[str], str]:
    """A judge callable over an OpenAI-compatible chat endpoint (vLLM, SGLang, openm1's server...)."""
    if client is None:
        try:
            import openai
        except ImportError as e:  # pragma: no cover - exercised only without the extra
            raise ImportError("the endpoint judge needs the openai client: pip install 'openm1[rl]'") from e
        client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s)

    def judge(text: str) -> str:
        out = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": text}],
            temperature=temperature,
            max_tokens=max_tokens,
        )
        return out.choices[0].message.content or ""

    return judge


@dataclass
class JudgeReward:
    """Score = the judge's parsed score in [0, 1]; unparseable judge output scores 0 with the reason.
    Every score also feeds the length-bias monitor (length = ``length_fn(response)``, characters by
    default; pass a tokenizer's count for tokens)."""

    judge: Callable[[str], str]
    template: str = DEFAULT_TEMPLATE
    max_score: float = 10.0
    monitor: LengthBiasMonitor | None = field(default_factory=LengthBiasMonitor)
    length_fn: Callable[[str], float] = len
    strip_thinking: bool = True
    """Show the judge only the text after ``</think>`` (the answer, not the reasoning)."""

    def __call__(self, prompt: str, response: str, reference: Any, **meta: Any) -> RewardResult:
        shown = response.rsplit("</think>", 1)[-1].strip() if self.strip_thinking else response
        text = self.template.format(
            prompt=prompt, reference=reference, response=shown, max_score=self.max_score
        )
        raw = self.judge(text)
        score = parse_score(raw, self.max_score)
        details: dict[str, Any] = {"judge_output": raw[-500:] if isinstance(raw, str) else repr(raw)}
        if score is None:
            details["reason"] = "could not parse a score from the judge's output"
            score = 0.0
        if self.monitor is not None:
            details["length_correlation"] = self.monitor.update(score, self.length_fn(response))
        return RewardResult(score, details)
