"""``openm1 data decontaminate``: drop or flag training rows that overlap benchmark rows.

Two ways to call a row contaminated:

- ``ngram`` (default): it shares a word n-gram (default n = 13, as in common practice) with a
  benchmark row, after :func:`~openm1.data.ngram.normalize`, so changes of case, whitespace and
  punctuation do not hide an overlap. A benchmark row shorter than n words matches a training row
  that contains all of it.
- ``embedding``: its key's embedding has cosine similarity >= threshold with a benchmark row's
  (catches paraphrases that share no long n-gram; exact copies score 1).

``--mode drop`` leaves contaminated rows out; ``--mode flag`` keeps every row and adds a field
(default ``contamination``): ``null`` for clean rows, the match for the others. Each match goes to
the report with the benchmark row (file, line, key text) it matched.

Memory: the benchmark index (its n-grams, or its embeddings) and the benchmark rows' key texts, for
the report: benchmarks are small. Training rows stream through a batch at a time.
"""

from __future__ import annotations

import json
import sys
from typing import IO

from openm1.data.jsonl_io import Row
from openm1.data.keys import KeyTemplate
from openm1.data.ngram import NgramIndex
from openm1.data.pipeline import EmbeddingOptions, Run
from openm1.data.report import Summary, ref

METHODS = ("ngram", "embedding")
MODES = ("drop", "flag")


def decontaminate(
    inputs: list[str],
    output: str | None,
    key: str,
    against: list[str],
    against_key: str | None = None,
    method: str = "ngram",
    mode: str = "drop",
    *,
    n: int = 13,
    embedding: EmbeddingOptions | None = None,
    flag_field: str = "contamination",
    report: str | None = None,
    batch_size: int = 1024,
    model=None,
    log: IO[str] | None = sys.stderr,
) -> Summary:
    """Write the rows of ``inputs`` that share nothing with the ``against`` benchmark files (``drop``),
    or all of them with a ``flag_field`` saying which do (``flag``)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: one of {', '.join(METHODS)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    bench_key = KeyTemplate(against_key or key)
    with Run("decontaminate", inputs, output, key, report, log) as run:
        s = run.summary
        texts: dict[int, str] = {}
        if method == "ngram":
            index = NgramIndex(n)
            for rows in run.against(against, bench_key, 4096):
                for r in rows:
                    index.add(r.text, r.rid, r.norm.split())
            s.extra.update(method="ngram", n=n, benchmark_ngrams=index.num_grams)
        else:
            from openm1.data.embedding import EmbeddingIndex, load_model

            o = embedding or EmbeddingOptions()
            index = EmbeddingIndex(
                model or load_model(o.model, o.device), o.threshold, o.batch_size, o.device
            )
            for rows in run.against(against, bench_key, batch_size):
                index.add(index.encode([r.text for r in rows]), [r.rid for r in rows])
                texts.update((r.rid, r.text) for r in rows)
            s.extra.update(method="embedding", threshold=o.threshold)

        for rows in run.rows(batch_size):
            if method == "ngram":
                found = [_ngram_match(index.search(toks=r.norm.split()), against) for r in rows]
            else:
                found = [
                    None if m is None else {**ref(against, m[0], text=texts[m[0]]), "score": round(m[1], 4)}
                    for m in index.search(index.encode([r.text for r in rows]))
                ]
            for r, m in zip(rows, found, strict=True):
                _emit(run, r, m, mode, flag_field, method)
    return s


def _ngram_match(m, against: list[str]) -> dict | None:
    if m is None:
        return None
    return {
        **ref(against, m.ref, text=m.ref_text),
        "ngram": m.ngram,
        "shared_ngrams": m.shared,
        "row_ngrams": m.total,
    }


def _emit(run: Run, r: Row, match: dict | None, mode: str, flag_field: str, method: str) -> None:
    s = run.summary
    if match is not None:
        run.report.add(
            {"type": "match", "row": ref(run.inputs, r.rid, text=r.text), "method": method, "against": match}
        )
        s.reasons[method] += 1
    if mode == "flag":
        r.obj[flag_field] = None if match is None else {"method": method, **match}
        run.out.write_line(json.dumps(r.obj, ensure_ascii=False))
        s.kept += 1
        s.flagged += match is not None
    elif match is None:
        run.out.write_line(r.raw)
        s.kept += 1
    else:
        s.dropped += 1
