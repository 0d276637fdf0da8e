"""``openm1 data separate``: make one set disjoint from another (RL prompts from SFT data, say).

Every ``--against`` row is indexed (exact key after normalisation, and its MinHash signature or
embedding), then the input streams past: a row that exactly or nearly duplicates any ``--against``
row is removed and reported with the row it matched. ``--method exact`` checks exact copies only.

Memory: the index of the ``--against`` rows (see :class:`~openm1.data.pipeline.Matcher`: about 100
bytes a row for exact keys, plus about 1.1 KB for MinHash or 1.5 KB for MiniLM embeddings), which
is what makes each input row's check cheap; input rows stream through a batch at a time.
"""

from __future__ import annotations

import sys
from typing import IO

from openm1.data.keys import KeyTemplate
from openm1.data.pipeline import EmbeddingOptions, Matcher, MinHashOptions, Run
from openm1.data.report import Summary, ref


def separate(
    inputs: list[str],
    output: str | None,
    key: str,
    against: list[str],
    against_key: str | None = None,
    method: str = "minhash",
    *,
    minhash: MinHashOptions | None = None,
    embedding: EmbeddingOptions | None = None,
    report: str | None = None,
    batch_size: int = 4096,
    model=None,
    log: IO[str] | None = sys.stderr,
) -> Summary:
    """Write the rows of ``inputs`` that neither equal nor nearly equal any row of ``against``."""
    if method == "embedding":
        batch_size = min(batch_size, 1024)
    with Run("separate", inputs, output, key, report, log) as run:
        s = run.summary
        matcher = Matcher(method, minhash, embedding, model)  # inside the run: its time counts
        for rows in run.against(against, KeyTemplate(against_key or key), batch_size):
            matcher.add(rows)
        for rows in run.rows(batch_size):
            for r, m in zip(rows, matcher.search(rows), strict=True):
                if m is None:
                    run.out.write_line(r.raw)
                    s.kept += 1
                    continue
                s.dropped += 1
                s.reasons[m.method] += 1
                run.report.add(
                    {
                        "type": "match",
                        "row": ref(run.inputs, r.rid, text=r.text),
                        "method": m.method,
                        "score": round(m.score, 4),
                        "against": ref(against, m.ref),
                    }
                )
        s.extra["method"] = method
        s.extra["threshold"] = None if matcher.index is None else matcher.index.threshold
    return s
