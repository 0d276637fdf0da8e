"""Evaluate a model on benchmark rows: n samples per problem through the generation engine, each
checked by its row type's verifier, pass@1 and pass@k by the unbiased estimator (Chen et al., 2021):
``pass@k = 1 - C(n - c, k) / C(n, k)`` for c correct of n samples, averaged over problems."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from openm1.eval.bench import BenchRow, reward_for
from openm1.generate.engine import Engine
from openm1.generate.sampling import SamplingParams
from openm1.rewards.base import score_batch


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is
    correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


@dataclass
class EvalSettings:
    """How answers are sampled. ``n`` samples per problem; temperature 0 is greedy (then n must be 1)."""

    n: int = 1
    k: tuple[int, ...] = (1,)
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    max_batch: int = 64
    chat: bool = True
    """Wrap each prompt in the tokenizer's chat template (one user message)."""

    def validate(self) -> EvalSettings:
        if self.n < 1:
            raise ValueError(f"n (samples per problem) must be >= 1, got {self.n}")
        if self.temperature == 0 and self.n > 1:
            raise ValueError(
                "greedy decoding (temperature 0) gives n identical samples: set a temperature > 0"
            )
        bad = [k for k in self.k if not 1 <= k <= self.n]
        if bad:
            raise ValueError(f"pass@k needs 1 <= k <= n = {self.n}; got k = {bad}")
        if self.max_new_tokens < 1 or self.max_batch < 1:
            raise ValueError("max_new_tokens and max_batch must be >= 1")
        return self


@dataclass
class EvalResult:
    """Scores overall and per row type, and every sample (for sample answers and error analysis)."""

    scores: dict[str, float]
    by_type: dict[str, dict[str, float]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    generated_tokens: int = 0

    def to_dict(self, with_rows: bool = True) -> dict[str, Any]:
        d = {
            "scores": self.scores,
            "by_type": self.by_type,
            "settings": self.settings,
            "seconds": self.seconds,
            "generated_tokens": self.generated_tokens,
            "malformed": self.malformed,
        }
        if with_rows:
            d["rows"] = self.rows
        return d


def evaluate(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[BenchRow],
    settings: EvalSettings | None = None,
    malformed: Sequence[dict[str, Any]] = (),
) -> EvalResult:
    """Sample ``settings.n`` answers per row, check them, and compute pass@k for each k."""
    s = (settings or EvalSettings()).validate()
    if not rows:
        raise ValueError("no benchmark rows to evaluate (all malformed, or an empty file)")
    t0 = time.perf_counter()
    prompts = []
    for r in rows:
        ids = (
            tokenizer.chat_prompt([{"role": "user", "content": r.prompt}])
            if s.chat
            else tokenizer.encode(r.prompt)
        )
        prompts.append(ids)
    longest = max(len(p) for p in prompts)
    was_training = model.training
    engine = Engine(
        model, tokenizer, max_batch=min(s.max_batch, len(rows) * s.n), max_len=longest + s.max_new_tokens
    )
    params = []
    for i in range(len(rows)):
        for j in range(s.n):
            params.append(
                SamplingParams(
                    max_new_tokens=s.max_new_tokens,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    seed=s.seed * 1_000_003 + i * 997 + j,
                )
            )
    flat_prompts = [p for p in prompts for _ in range(s.n)]
    with torch.no_grad():
        results = engine.generate(flat_prompts, params)
    model.train(was_training)
    texts = [r.text for r in results]
    tokens = [len(r.token_ids) for r in results]
    finish = [r.finish_reason for r in results]
    out_rows, scores, by_type = grade(rows, texts, s.n, s.k, tokens, finish)
    return EvalResult(
        scores,
        by_type,
        out_rows,
        list(malformed),
        {f: getattr(s, f) for f in ("n", "k", "temperature", "top_p", "max_new_tokens", "seed", "chat")},
        time.perf_counter() - t0,
        sum(tokens),
    )


def grade(
    rows: Sequence[BenchRow],
    texts: Sequence[str],
    n: int,
    ks: Sequence[int],
    tokens: Sequence[int] | None = None,
    finish: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float], dict[str, dict[str, float]]]:
    """Check ``n`` consecutive answers per row; returns (per-row results, overall scores, per type)."""
    if len(texts) != n * len(rows):
        raise ValueError(f"expected {n} answers for each of {len(rows)} rows, got {len(texts)}")
    tokens = list(tokens) if tokens is not None else [len(t) for t in texts]
    finish = list(finish) if finish is not None else ["stop"] * len(texts)
    checked: list[Any] = [None] * len(texts)
    by_kind: dict[str, list[int]] = defaultdict(list)
    for idx in range(len(texts)):
        by_kind[rows[idx // n].type].append(idx)
    for kind, idxs in by_kind.items():
        scored = score_batch(
            reward_for(kind),
            [rows[i // n].prompt for i in idxs],
            [texts[i] for i in idxs],
            [rows[i // n].reference for i in idxs],
        )
        for i, res in zip(idxs, scored, strict=True):
            checked[i] = res
    out_rows = []
    per_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i, row in enumerate(rows):
        samples = [
            {
                "text": texts[i * n + j],
                "correct": checked[i * n + j].score >= 1.0,
                "details": checked[i * n + j].details,
                "tokens": tokens[i * n + j],
                "finish_reason": finish[i * n + j],
            }
            for j in range(n)
        ]
        c = sum(x["correct"] for x in samples)
        item = {"id": row.id, "type": row.type, "line": row.line, "prompt": row.prompt, "correct": c, "n": n}
        item |= {f"pass@{k}": pass_at_k(n, c, k) for k in ks}
        item["samples"] = samples
        out_rows.append(item)
        per_type[row.type].append(item)

    def summarize(items: list[dict[str, Any]]) -> dict[str, float]:
        d: dict[str, float] = {f"pass@{k}": sum(it[f"pass@{k}"] for it in items) / len(items) for k in ks}
        d["problems"] = len(items)
        return d

    scores = summarize(out_rows) | {"mean_length": sum(tokens) / len(tokens)}
    return out_rows, scores, {t: summarize(items) for t, items in sorted(per_type.items())}


def format_table(result: EvalResult, name: str = "") -> str:
    """A Markdown table: one line per row type and the total."""
    ks = [key for key in result.scores if key.startswith("pass@")]
    head = "| " + " | ".join(["type", "problems", *ks]) + " |"
    lines = [head, "|" + "---|" * (2 + len(ks))]
    for t, d in result.by_type.items():
        lines.append("| " + " | ".join([t, str(d["problems"]), *(f"{100 * d[k]:.1f}" for k in ks)]) + " |")
    total = result.scores
    lines.append(
        "| "
        + " | ".join(
            [f"**{name or 'all'}**", str(len(result.rows)), *(f"**{100 * total[k]:.1f}**" for k in ks)]
        )
        + " |"
    )
    return "\n".join(lines)
