"""Benchmark files: one JSON object per line, four kinds of problem, bad rows reported by line.

Every row has ``prompt`` (the user message) and ``type``; ``id`` is optional (default: the line
number). By type:

* ``math``: ``answer`` (LaTeX or plain, e.g. ``"\\\\frac{1}{2}"``, ``"42"``), checked for equivalence
  with math-verify (``openm1.rewards.math``); the model should end with ``\\boxed{...}``.
  MATH-500 and AIME rows fit as ``{"type": "math", "prompt": problem, "answer": answer}``.
* ``mcq``: ``choices`` (a list, lettered A, B, C ... in order, appended to the prompt) and
  ``answer`` (the correct letter, or the index of the correct choice); graded on the letter after
  ``Answer:`` or in ``\\boxed{}``. GPQA rows fit this.
* ``code``: ``tests``, either Python test code (asserts run after the solution) or a list of
  ``{"input": stdin, "output": expected stdout}`` cases, run in the sandbox
  (``openm1.rewards.sandbox``) against the last fenced code block. LiveCodeBench rows fit the latter.
* ``logic``: ``family`` and ``data`` of an ``openm1.rewards.logic`` puzzle, checked by its exact
  verifier (the pipeline writes its held-out set in this form).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from openm1.data.jsonl_io import Problems, iter_objects
from openm1.rewards.base import Reward, RewardResult
from openm1.rewards.logic import FAMILIES, extract_answer

TYPES = ("math", "mcq", "code", "logic")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class BenchRow:
    """One problem: where it came from, what the model sees, what its answer is checked against."""

    id: str
    type: str
    prompt: str
    reference: Any
    file: str = ""
    line: int = 0


@dataclass
class MultipleChoiceReward:
    """1.0 when the final answer's letter is the correct one (``reference`` is the letter)."""

    def __call__(self, prompt: str, response: str, reference: Any, **meta: Any) -> RewardResult:
        answer = extract_answer(response)
        if answer is None:
            return RewardResult(0.0, {"reason": "no answer found (expected 'Answer: X')"})
        m = re.match(r"\(?\s*([A-Za-z])\s*[\).:]?(\s|$)", answer.strip())
        letter = m.group(1).upper() if m else None
        ok = letter == reference
        return RewardResult(float(ok), {"answer": letter or answer, "reason": "" if ok else "wrong choice"})


def reward_for(kind: str) -> Reward:
    """The checker of a row type (imports its extra lazily)."""
    if kind == "math":
        from openm1.rewards.math import MathReward

        return MathReward()
    if kind == "mcq":
        return MultipleChoiceReward()
    if kind == "code":
        from openm1.rewards.sandbox import CodeReward

        return CodeReward()
    if kind == "logic":
        from openm1.rewards.logic import LogicReward

        return LogicReward()
    raise ValueError(f"unknown benchmark row type {kind!r}; valid: {', '.join(TYPES)}")


def parse_row(obj: dict[str, Any], line: int) -> BenchRow:
    """Validate one row; ValueError says what is wrong and how to fix it."""
    kind = obj.get("type")
    if kind not in TYPES:
        raise ValueError(f'"type" is {kind!r}; give one of {", ".join(TYPES)}')
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError('"prompt" must be a non-empty string')
    rid = str(obj.get("id", line))
    if kind == "math":
        answer = obj.get("answer")
        if not isinstance(answer, (str, int, float)) or str(answer).strip() == "":
            raise ValueError('a math row needs "answer" (a string or number)')
        return BenchRow(rid, kind, prompt, str(answer))
    if kind == "mcq":
        choices, answer = obj.get("choices"), obj.get("answer")
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
            raise ValueError('an mcq row needs "choices", a list of 2 to 26 options')
        if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
            letter = LETTERS[answer]
        elif isinstance(answer, str) and answer.strip().upper() in LETTERS[: len(choices)]:
            letter = answer.strip().upper()
        else:
            raise ValueError(
                f'"answer" must be a letter A-{LETTERS[len(choices) - 1]} or an index 0-{len(choices) - 1}'
            )
        listing = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
        text = f"{prompt}\n\n{listing}\n\nEnd with 'Answer: ' and the letter of your choice."
        return BenchRow(rid, kind, text, letter)
    if kind == "code":
        tests = obj.get("tests")
        ok = (isinstance(tests, str) and tests.strip()) or (
            isinstance(tests, list)
            and tests
            and all(isinstance(c, dict) and "input" in c and "output" in c for c in tests)
        )
        if not ok:
            raise ValueError('a code row needs "tests": Python test code, or [{"input": ..., "output": ...}]')
        return BenchRow(rid, kind, prompt, tests)
    fam, data = obj.get("family"), obj.get("data")
    if fam not in FAMILIES:
        raise ValueError(f'a logic row needs "family", one of {", ".join(FAMILIES)}; got {fam!r}')
    if not isinstance(data, dict):
        raise ValueError('a logic row needs "data", the puzzle\'s data object')
    return BenchRow(rid, kind, prompt, {"family": fam, "data": data})


def load_bench(
    path: str | os.PathLike, stream: IO[str] | None = None, quiet: bool = False
) -> tuple[list[BenchRow], list[dict[str, Any]]]:
    """Rows of a benchmark file and the malformed ones (``{"file", "line", "reason"}``); bad rows are
    reported (to ``stream``, default stderr, unless ``quiet``) and skipped, the rest are evaluated."""
    path = str(path)
    stream = None if quiet else (stream or sys.stderr)
    if not Path(path).is_file():
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    bad: list[dict[str, Any]] = []
    problems = Problems(
        stream=stream, sink=lambda p: bad.append({k: p[k] for k in ("file", "line", "reason")})
    )
    rows = []
    for row in iter_objects(path, 0, problems):
        try:
            item = parse_row(row.obj, row.line)
        except ValueError as e:
            bad.append({"file": path, "line": row.line, "reason": str(e)})
            if stream is not None:
                print(f"{path}:{row.line}: {e}", file=stream)
            continue
        item.file, item.line = path, row.line
        rows.append(item)
    return rows, bad
