"""Seeded puzzle families with a difficulty knob and exact verifiers (in the spirit of SynLogic).

Each family turns ``(seed, difficulty)`` into a :class:`Puzzle` deterministically and checks an answer
exactly. Difficulty 1 is learnable by a tiny model on CPU (two numbers to sort, a three-letter word to
reverse); each step up lengthens the input or the chain of reasoning.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_DIFFICULTY = 10


@dataclass(frozen=True)
class Puzzle:
    """One generated task: the prompt to show, the canonical answer, and the data the verifier needs."""

    family: str
    difficulty: int
    seed: int
    prompt: str
    answer: str
    data: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Family:
    """A puzzle family: ``make(rng, difficulty) -> (prompt, answer, data)`` and ``check(data, text)``."""

    name: str
    make: Callable[[random.Random, int], tuple[str, str, dict[str, Any]]]
    check: Callable[[dict[str, Any], str], bool]

    def generate(self, seed: int, difficulty: int = 1) -> Puzzle:
        if not isinstance(difficulty, int) or not 1 <= difficulty <= MAX_DIFFICULTY:
            raise ValueError(f"difficulty must be an integer in [1, {MAX_DIFFICULTY}], got {difficulty!r}")
        rng = random.Random(f"{self.name}:{seed}:{difficulty}")  # str seeds hash stably across runs
        prompt, answer, data = self.make(rng, difficulty)
        return Puzzle(self.name, difficulty, seed, prompt, answer, data)

    def verify(self, puzzle: Puzzle, text: str) -> bool:
        """Exact check of an extracted answer (see :func:`extract_answer`) against the puzzle."""
        return self.check(puzzle.data, text.strip())


_SUFFIX = " Give only the final answer after 'Answer:'."
_INT = re.compile(r"[-+]?\d+")


def _ints(text: str) -> list[int] | None:
    """All integers in ``text`` when it holds nothing else but separators, else None."""
    if re.search(r"[^\d\s,;+\-\[\]()]", text):
        return None
    return [int(x) for x in _INT.findall(text)]


def _one_int(text: str) -> int | None:
    text = re.sub(r"^\s*[a-z]\s*=\s*", "", text.strip(), flags=re.IGNORECASE).rstrip(".")
    return int(text) if re.fullmatch(r"[-+]?\d+", text) else None


def _word(text: str) -> str:
    return text.strip().strip("'\"`.").strip().lower()


# --------------------------------------------------------------------------- families


def _sort(rng: random.Random, d: int):
    xs = [rng.randint(0, 10 * d) for _ in range(d + 1)]
    return (
        f"Sort these numbers in ascending order, separated by spaces: {' '.join(map(str, xs))}." + _SUFFIX,
        " ".join(map(str, sorted(xs))),
        {"numbers": xs},
    )


def _count(rng: random.Random, d: int):
    alphabet = "abcdefghijklmnopqrstuvwxyz"[: min(26, 2 + d)]
    s = "".join(rng.choice(alphabet) for _ in range(3 + 3 * d))
    c = rng.choice(alphabet)
    return (
        f"How many times does the letter '{c}' appear in '{s}'?" + _SUFFIX,
        str(s.count(c)),
        {"text": s, "letter": c},
    )


_OPS = {"Add": lambda a, b: a + b, "Subtract": lambda a, b: a - b, "Multiply by": lambda a, b: a * b}


def _arith(rng: random.Random, d: int):
    x = rng.randint(1, 9)
    steps, value = [], x
    for _ in range(d + 1):
        op = rng.choice(list(_OPS)) if d > 2 else rng.choice(["Add", "Subtract"])
        b = rng.randint(2, 3) if op == "Multiply by" else rng.randint(1, 9)
        value = _OPS[op](value, b)
        steps.append(f"{op} {b}.")
    return (f"Start with {x}. {' '.join(steps)} What is the result?" + _SUFFIX, str(value), {"value": value})


def _parity(rng: random.Random, d: int):
    bits = "".join(rng.choice("01") for _ in range(1 + 2 * d))
    ans = "even" if bits.count("1") % 2 == 0 else "odd"
    return (f"Is the number of 1s in {bits} even or odd?" + _SUFFIX, ans, {"bits": bits})


def _reverse(rng: random.Random, d: int):
    w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(2 + d))
    return (f"Write the string '{w}' backwards." + _SUFFIX, w[::-1], {"word": w})


def _linear(rng: random.Random, d: int):
    a = rng.randint(1, d + 1)
    x = rng.randint(-3 * d, 3 * d)
    b = rng.randint(-5 * d, 5 * d)
    lhs = (f"{a}x" if a != 1 else "x") + (f" + {b}" if b > 0 else f" - {-b}" if b < 0 else "")
    return (f"Solve for x: {lhs} = {a * x + b}." + _SUFFIX, str(x), {"a": a, "b": b, "c": a * x + b})


def _shift(word: str, k: int) -> str:
    return "".join(chr((ord(ch) - 97 + k) % 26 + 97) for ch in word)


def _caesar(rng: random.Random, d: int):
    plain = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(2 + d))
    k = rng.randint(1, min(25, d + 1))
    return (
        f"The word '{_shift(plain, k)}' was encrypted by shifting each letter {k} places forward in "
        "the alphabet (wrapping z to a). Decrypt it." + _SUFFIX,
        plain,
        {"cipher": _shift(plain, k), "k": k},
    )


def _reach(rng: random.Random, d: int):
    n = 3 + d
    nodes = [chr(65 + i) for i in range(n)]
    edges = sorted({(rng.choice(nodes), rng.choice(nodes)) for _ in range(n)} - {(v, v) for v in nodes})
    src, dst = rng.sample(nodes, 2)
    want = rng.random() < 0.5  # balance yes/no: add or remove a path toward the wanted answer
    if want and not _reachable(edges, src, dst):
        edges = sorted(set(edges) | {(src, dst)})
    elif not want:
        edges = [e for e in edges if not (_reachable(edges, src, e[0]) and _reachable(edges, e[1], dst))]
    ans = "yes" if _reachable(edges, src, dst) else "no"
    listing = ", ".join(f"{a}->{b}" for a, b in edges) or "(none)"
    return (
        f"A directed graph has edges {listing}. Can you reach {dst} from {src}? Answer yes or no." + _SUFFIX,
        ans,
        {"edges": edges, "src": src, "dst": dst},
    )


def _variables(rng: random.Random, d: int):
    """Pointer chasing: the asked variable names another, which names another, ... (``d`` hops), the
    last holds a digit; the other variables are distractors holding digits. Solving it means looking
    each name up in the prompt (content-based retrieval, what softmax attention does well)."""
    names = rng.sample("abcdefghijklmnopqrstuvwxyz", 3 + 2 * d)
    chain, others = names[: d + 1], names[d + 1 :]
    value = rng.randint(0, 9)
    defs = {a: b for a, b in zip(chain[:-1], chain[1:], strict=True)} | {chain[-1]: str(value)}
    defs |= {v: str(rng.randint(0, 9)) for v in others}
    order = list(defs)
    rng.shuffle(order)
    listing = ", ".join(f"{v}={defs[v]}" for v in order)
    return (
        f"Given {listing}. What is {chain[0]}?" + _SUFFIX,
        str(value),
        {"defs": {v: defs[v] for v in order}, "query": chain[0]},
    )


def _solves(d: dict[str, Any], x: int | None) -> bool:
    return x is not None and d["a"] * x + d["b"] == d["c"]


def variable_chain(defs: dict[str, str], name: str) -> list[str]:
    """The names followed from ``name`` to the one holding a digit (``variables`` puzzles)."""
    chain = [name]
    while not defs[chain[-1]].isdigit():
        chain.append(defs[chain[-1]])
    return chain


def _resolve(defs: dict[str, str], name: str) -> int:
    return int(defs[variable_chain(defs, name)[-1]])


def _reachable(edges, src: str, dst: str) -> bool:
    seen, todo = {src}, [src]
    while todo:
        v = todo.pop()
        for a, b in edges:
            if a == v and b not in seen:
                seen.add(b)
                todo.append(b)
    return dst in seen


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("sorting", _sort, lambda d, t: _ints(t) == sorted(d["numbers"])),
        Family("counting", _count, lambda d, t: _one_int(t) == d["text"].count(d["letter"])),
        Family("arithmetic", _arith, lambda d, t: _one_int(t) == d["value"]),
        Family(
            "parity", _parity, lambda d, t: _word(t) == ("even" if d["bits"].count("1") % 2 == 0 else "odd")
        ),
        Family("reversal", _reverse, lambda d, t: _word(t) == d["word"][::-1]),
        Family("linear_equation", _linear, lambda d, t: _solves(d, _one_int(t))),
        Family("caesar", _caesar, lambda d, t: _word(t) == _shift(d["cipher"], -d["k"])),
        Family(
            "reachability",
            _reach,
            lambda d, t: _word(t) == ("yes" if _reachable(d["edges"], d["src"], d["dst"]) else "no"),
        ),
        Family("variables", _variables, lambda d, t: _one_int(t) == _resolve(d["defs"], d["query"])),
    ]
}


def family(name: str) -> Family:
    """The family called ``name`` (error lists the valid names)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown puzzle family {name!r}; valid: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def generate(name: str, seed: int, difficulty: int = 1) -> Puzzle:
    return family(name).generate(seed, difficulty)
