"""Text normalisation, exact keys, and n-gram decontamination.

:func:`normalize` is the one notion of "the same text" every verb uses: Unicode NFKC, case folded,
punctuation (Unicode category P) replaced by a space, symbols (``+ = < $`` ..., category S) and each
CJK ideograph or kana set apart as tokens of their own, whitespace collapsed. So ``"What is 2+3?"``,
``"what  is 2 + 3"`` and ``"WHAT IS 2+3 ?!"`` are one text, while ``2+3`` and ``2=3`` stay apart.
Note that ``- * /`` are punctuation to Unicode and vanish.

:class:`NgramIndex` holds the word n-grams of benchmark rows (as in common practice, n = 13) and finds
training rows that share any of them. Benchmark sets are small (thousands to a few hundred thousand
rows), so the index keeps, in memory, one dict entry per distinct benchmark n-gram (its hash -> the
first benchmark row and position that has it) and each benchmark row's tokens and key text: the
tokens to confirm every hit exactly (a hash collision never counts as contamination) and the text for
the report. Training rows stream past it one at a time.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

_NONWORD = re.compile(r"[^\w\s]")
# Kana and CJK ideographs: each one a token, since these scripts put no spaces between words.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_REPLACEMENT: dict[str, str] = {}


def _replace(m: re.Match) -> str:
    c = m.group()
    r = _REPLACEMENT.get(c)
    if r is None:
        cat = unicodedata.category(c)
        # punctuation goes; a combining mark stays inside its word; a symbol becomes a token
        r = " " if cat[0] == "P" else c if cat[0] == "M" else f" {c} "
        _REPLACEMENT[c] = r
    return r


def normalize(text: str) -> str:
    """The text with case, whitespace and punctuation differences removed (see the module doc)."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = _NONWORD.sub(_replace, t)
    t = _CJK.sub(r" \g<0> ", t)
    return " ".join(t.split())


def tokens(text: str) -> list[str]:
    """The words of :func:`normalize`'s text."""
    return normalize(text).split()


def exact_key(normalized: str) -> int:
    """A 64-bit key of an already normalised text: equal texts, equal keys (blake2b, stable across runs)."""
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass
class NgramMatch:
    """A training row's overlap with one benchmark row."""

    ref: int  # the benchmark row's id (see jsonl_io.row_id)
    ref_text: str  # its key text
    ngram: str  # the first shared n-gram, as normalised words
    shared: int  # how many of the training row's n-grams this benchmark row has
    total: int  # how many n-grams the training row has

    @property
    def score(self) -> float:
        return min(1.0, self.shared / self.total) if self.total else 0.0


class NgramIndex:
    """Word n-grams of reference (benchmark) rows; :meth:`search` finds the rows of a text's n-grams.

    A reference row shorter than ``n`` words counts as one n-gram of its own length: a training row
    that contains all of it, in order, matches it. Holds per distinct reference n-gram one dict entry,
    and per reference row its tokens and key text (see the module doc for why).
    """

    def __init__(self, n: int = 13):
        if n < 1:
            raise ValueError(f"n-gram size must be >= 1, got {n}")
        self.n = n
        self._grams: dict[int, int] = {}  # hash(tuple of words) -> ref_index << 32 | position
        self._short: set[int] = set()  # lengths of reference rows shorter than n
        self._ref_ids: list[int] = []
        self._ref_tokens: list[list[str]] = []
        self._ref_texts: list[str] = []

    def __len__(self) -> int:
        return len(self._ref_ids)

    @property
    def num_grams(self) -> int:
        return len(self._grams)

    def add(self, text: str, ref: int, toks: list[str] | None = None) -> None:
        toks = tokens(text) if toks is None else toks
        if not toks:
            return
        i = len(self._ref_ids)
        self._ref_ids.append(ref)
        self._ref_tokens.append(toks)
        self._ref_texts.append(text)
        n = min(self.n, len(toks))
        if n < self.n:
            self._short.add(n)
        for pos in range(len(toks) - n + 1):
            self._grams.setdefault(hash(tuple(toks[pos : pos + n])), (i << 32) | pos)

    def _hit(self, gram: tuple[str, ...]) -> int | None:
        v = self._grams.get(hash(gram))
        if v is None:
            return None
        i, pos = v >> 32, v & 0xFFFFFFFF
        ref = self._ref_tokens[i]
        return i if tuple(ref[pos : pos + len(gram)]) == gram else None  # a hash collision is no match

    def search(self, text: str | None = None, toks: list[str] | None = None) -> NgramMatch | None:
        """The benchmark row sharing the most n-grams with the text, or None if none shares any."""
        toks = tokens(text) if toks is None else toks
        counts: Counter = Counter()
        first: dict[int, str] = {}
        total = 0
        for n in (self.n, *sorted(self._short)):
            for pos in range(len(toks) - n + 1):
                gram = tuple(toks[pos : pos + n])
                total += n == self.n
                i = self._hit(gram)
                if i is not None:
                    counts[i] += 1
                    first.setdefault(i, " ".join(gram))
        if not counts:
            return None
        i, shared = counts.most_common(1)[0]
        return NgramMatch(self._ref_ids[i], self._ref_texts[i], first[i], shared, max(total, 1))
