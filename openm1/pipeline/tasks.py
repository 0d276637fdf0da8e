"""The pipeline's task data: logic puzzles (openm1.rewards.logic) with worked chains of thought.

Every puzzle family the pipeline uses gets a short, exact ``<think>...</think>`` trace that a tiny
model can imitate (running counts, one arithmetic step per line, letters spelled out), then
``Answer: X`` which :func:`openm1.rewards.logic.extract_answer` reads. :func:`build_splits` draws the
four data sets from disjoint seed ranges and then removes any puzzle whose prompt already belongs to a
split earlier in the order eval, RL, SFT, pretraining, so the held-out and RL prompts never appear in
the SFT or pretraining data (checked again by :func:`check_disjoint`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from openm1.rewards.logic import LogicReward, Puzzle, family
from openm1.rewards.logic.puzzles import variable_chain
from openm1.rl.curriculum import Task

#: The instruction the puzzle generators append; the pipeline's format makes it implicit (and shorter
#: prompts train faster on a CPU).
_SUFFIX = " Give only the final answer after 'Answer:'."

#: Seed ranges of the splits (disjoint by construction; prompts are de-duplicated across them too).
SPLIT_SEEDS = {"eval": 0, "rl": 10_000_000, "sft": 20_000_000, "pretrain": 30_000_000}


def question(p: Puzzle) -> str:
    """The prompt shown to the model."""
    return p.prompt.replace(_SUFFIX, "")


def _sorting(p: Puzzle) -> str:
    rest, steps = list(p.data["numbers"]), []
    while rest:
        m = min(rest)
        steps.append(f"min {' '.join(map(str, rest))} = {m}")
        rest.remove(m)
    return "; ".join(steps)


def _counting(p: Puzzle) -> str:
    n, parts = 0, []
    for ch in p.data["text"]:
        if ch == p.data["letter"]:
            n += 1
            parts.append(f"{ch}{n}")
        else:
            parts.append(ch)
    return f"{' '.join(parts)} -> {n}"


_OP = {"Add": "+", "Subtract": "-", "Multiply by": "*"}


def _arithmetic(p: Puzzle) -> str:
    value = int(re.search(r"Start with (-?\d+)", p.prompt).group(1))
    lines = []
    for op, b in re.findall(r"(Add|Subtract|Multiply by) (\d+)", p.prompt):
        b = int(b)
        new = value + b if op == "Add" else value - b if op == "Subtract" else value * b
        lines.append(f"{value} {_OP[op]} {b} = {new}")
        value = new
    return "\n".join(lines)


def _parity(p: Puzzle) -> str:
    ones, parts = 0, []
    for bit in p.data["bits"]:
        ones += bit == "1"
        parts.append(f"{bit} {'odd' if ones % 2 else 'even'}")
    return ", ".join(parts)


def _reversal(p: Puzzle) -> str:
    w = p.data["word"]
    return f"{' '.join(w)} -> {' '.join(reversed(w))}"


def _linear(p: Puzzle) -> str:
    a, b, c = p.data["a"], p.data["b"], p.data["c"]
    rhs = c - b
    first = f"{c} - {b}" if b >= 0 else f"{c} + {-b}"
    lead = "x" if a == 1 else f"{a}x"
    lines = [f"{lead} = {first} = {rhs}"]
    if a != 1:
        lines.append(f"x = {rhs} / {a} = {rhs // a}")
    return "\n".join(lines)


def _caesar(p: Puzzle) -> str:
    k = p.data["k"]
    return " ".join(f"{ch}-{k}={chr((ord(ch) - 97 - k) % 26 + 97)}" for ch in p.data["cipher"])


def _reachability(p: Puzzle) -> str:
    edges, src, dst = p.data["edges"], p.data["src"], p.data["dst"]
    seen, todo = [src], [src]
    while todo:
        v = todo.pop(0)
        for a, b in edges:
            if a == v and b not in seen:
                seen.append(b)
                todo.append(b)
    return f"from {src}: {' '.join(seen)}; {dst} {'reached' if dst in seen else 'not reached'}"


def _variables(p: Puzzle) -> str:
    defs = p.data["defs"]
    return ", ".join(f"{name}={defs[name]}" for name in variable_chain(defs, p.data["query"]))


TRACES: dict[str, Callable[[Puzzle], str]] = {
    "sorting": _sorting,
    "counting": _counting,
    "arithmetic": _arithmetic,
    "parity": _parity,
    "reversal": _reversal,
    "linear_equation": _linear,
    "caesar": _caesar,
    "reachability": _reachability,
    "variables": _variables,
}


def solution(p: Puzzle) -> str:
    """The worked answer the SFT data teaches: ``<think>trace</think>\\nAnswer: X``."""
    if p.family not in TRACES:
        raise ValueError(
            f"no chain-of-thought writer for family {p.family!r}; the pipeline supports {sorted(TRACES)}"
        )
    return f"<think>{TRACES[p.family](p)}</think>\nAnswer: {p.answer}"


def pretraining_text(p: Puzzle) -> str:
    """A plain-text document of the domain (no chat format): the question and its worked solution."""
    return f"Question: {question(p)}\nWorked solution: {TRACES[p.family](p)}\nAnswer: {p.answer}\n"


@dataclass
class Splits:
    """The pipeline's data: puzzles per split, disjoint in prompt text."""

    pretrain: list[Puzzle]
    sft: list[Puzzle]
    rl: list[Puzzle]
    eval: list[Puzzle]

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("pretrain", "sft", "rl", "eval")}


def _draw(
    families: Sequence[str], difficulty: int, n: int, base: int, taken: set[str], split: str
) -> list[Puzzle]:
    out: list[Puzzle] = []
    seen: set[str] = set()
    for i in range(50 * n + 1000):
        if len(out) == n:
            return out
        fam = family(families[i % len(families)])
        p = fam.generate(base + i, difficulty)
        q = question(p)
        if q in taken or q in seen:
            continue
        seen.add(q)
        out.append(p)
    raise ValueError(
        f"could only find {len(out)} of {n} distinct {split} puzzles of {list(families)} at difficulty "
        f"{difficulty} outside the other splits: ask for fewer, or raise the difficulty (more puzzles)"
    )


def build_splits(
    families: Sequence[str],
    difficulty: int,
    *,
    n_eval: int,
    n_rl: int,
    n_sft: int,
    n_pretrain: int,
    seed: int = 0,
) -> Splits:
    """Draw the four splits (families round-robin), eval first; later splits skip earlier prompts."""
    missing = [f for f in families if f not in TRACES]
    if not families or missing:
        raise ValueError(f"families {missing or '[]'} unsupported; choose from {sorted(TRACES)}")
    offset = seed * 1_000_003
    taken: set[str] = set()
    out = {}
    for split, n in (("eval", n_eval), ("rl", n_rl), ("sft", n_sft), ("pretrain", n_pretrain)):
        out[split] = _draw(families, difficulty, n, SPLIT_SEEDS[split] + offset, taken, split)
        if split in ("eval", "rl"):
            taken |= {question(p) for p in out[split]}
    splits = Splits(**out)
    check_disjoint(splits)
    return splits


def check_disjoint(splits: Splits) -> None:
    """Raise if a held-out or RL prompt occurs in the SFT or pretraining data, or eval in RL."""
    ev, rl = {question(p) for p in splits.eval}, {question(p) for p in splits.rl}
    for name, held in (("eval", ev), ("rl", rl)):
        for other in ("sft", "pretrain") + (("rl",) if name == "eval" else ()):
            clash = held & {question(p) for p in getattr(splits, other)}
            if clash:
                raise ValueError(
                    f"{len(clash)} {name} prompts also occur in the {other} data, e.g. {next(iter(clash))!r}"
                )


def to_tasks(puzzles: Iterable[Puzzle], source: str = "logic") -> list[Task]:
    """RL / evaluation tasks scored by the families' exact verifiers."""
    reward = LogicReward()
    return [Task(question(p), p, reward, source, "rule", {"family": p.family}) for p in puzzles]
