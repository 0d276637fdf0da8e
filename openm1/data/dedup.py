"""``openm1 data dedup``: near-duplicate removal within one set (or across several sources at once).

Rows are read in order (several inputs: as if concatenated) and each is compared with the rows kept
before it: exactly, after normalisation, then by MinHash or embedding similarity. A row that matches
is dropped and joins the cluster of the kept row it matched; so the first occurrence is kept, every
cluster is a kept row and the rows that matched it, and each dropped row is at or above the
threshold with its cluster's kept row (not necessarily with the other dropped ones). Output: the
kept rows' lines exactly as they were read. Report: one ``cluster`` record per kept row that has
duplicates.

Memory: the matcher's indexes of the kept rows (see :class:`~openm1.data.pipeline.Matcher`), one
batch of rows, and 24 bytes per dropped row (which row it matched, how closely) for the cluster
records at the end.
"""

from __future__ import annotations

import sys
from array import array
from typing import IO

import numpy as np

from openm1.data.pipeline import EmbeddingOptions, Matcher, MinHashOptions, Run
from openm1.data.report import Summary, ref

METHOD_CODES = ("exact", "minhash", "embedding")


def dedup(
    inputs: list[str],
    output: str | None,
    key: str,
    method: str = "minhash",
    *,
    minhash: MinHashOptions | None = None,
    embedding: EmbeddingOptions | None = None,
    report: str | None = None,
    batch_size: int = 4096,
    model=None,
    log: IO[str] | None = sys.stderr,
) -> Summary:
    """Write the rows of ``inputs`` that are not near-duplicates of an earlier row to ``output``."""
    if method == "embedding":
        batch_size = min(batch_size, 1024)
    dup, kept_of, score, how = array("q"), array("q"), array("f"), array("b")
    with Run("dedup", inputs, output, key, report, log) as run:
        s = run.summary
        matcher = Matcher(method, minhash, embedding, model)  # inside the run: its time counts
        for rows in run.rows(batch_size):
            for r, m in zip(rows, matcher.dedup(rows), strict=True):
                if m is None:
                    run.out.write_line(r.raw)
                    s.kept += 1
                else:
                    dup.append(r.rid)
                    kept_of.append(m.ref)
                    score.append(m.score)
                    how.append(METHOD_CODES.index(m.method))
                    s.dropped += 1
                    s.reasons[m.method] += 1
        s.extra["method"] = method
        s.extra["threshold"] = None if matcher.index is None else matcher.index.threshold
        s.extra["clusters"] = _clusters(run, dup, kept_of, score, how)
    return s


def _clusters(run: Run, dup: array, kept_of: array, score: array, how: array) -> int:
    """Write one ``cluster`` record per kept row with duplicates, in input order; return their number."""
    if not dup:
        return 0
    heads = np.frombuffer(kept_of, dtype=np.int64)
    order = np.argsort(heads, kind="stable")  # by kept row, duplicates in input order
    bounds = np.flatnonzero(np.diff(heads[order])) + 1
    for group in np.split(order, bounds):
        head = int(heads[group[0]])
        members = [
            ref(run.inputs, dup[i], score=round(float(score[i]), 4), method=METHOD_CODES[how[i]])
            for i in group
        ]
        run.report.add(
            {
                "type": "cluster",
                "kept": ref(run.inputs, head),
                "size": 1 + len(members),
                "duplicates": members,
            }
        )
    return len(bounds) + 1
