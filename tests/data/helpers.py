"""Small synthetic data sets for the data tests: rows of real-looking words with planted near-duplicates."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = (
    "apple river stone cloud music garden silver window forest candle bridge ocean mountain paper "
    "yellow dragon pencil rocket castle winter summer planet engine button mirror shadow thunder "
    "island valley basket coffee monkey violin rabbit helmet ladder marble needle orange pepper "
    "quartz saddle tunnel wallet zebra anchor bottle camera desert eagle feather guitar hammer "
    "jacket kettle lemon magnet napkin oyster parrot pillow puzzle rubber salmon tomato trumpet"
).split()


def write_jsonl(path: Path, rows: list, raw_lines: list[bytes] | None = None) -> Path:
    with open(path, "wb") as f:
        for r in rows:
            f.write((json.dumps(r) + "\n").encode())
        for line in raw_lines or []:
            f.write(line + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def sentence(rng: random.Random, n: int = 14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def near_copy(rng: random.Random, text: str) -> str:
    """The text with its case, punctuation and spacing changed and one word replaced."""
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = rng.choice([w for w in WORDS if w != words[i]])
    out = " ".join(words)
    out = out.upper() if rng.random() < 0.5 else out.capitalize()
    return out.replace(" ", "  ", 1) + rng.choice(["?", "!", ".", " ...", ";"])


def planted(
    seed: int = 0, distinct: int = 200, copies: int = 60
) -> tuple[list[dict], set[int], dict[int, int]]:
    """Rows ``{"id", "text"}``: ``distinct`` random sentences, then near-copies of some of them.

    Returns the rows, the ids of the distinct rows, and for each near-copy id the id it copies.
    """
    rng = random.Random(seed)
    rows = [{"id": i, "text": sentence(rng)} for i in range(distinct)]
    source = {}
    for j in range(copies):
        src = rng.randrange(distinct)
        rows.append({"id": distinct + j, "text": near_copy(rng, rows[src]["text"]), "extra": [j]})
        source[distinct + j] = src
    return rows, set(range(distinct)), source
