"""What a run says at the end: the one-line :class:`Summary`, and the report file beside the output.

A report is JSONL (one record a line: the summary first, then ``problem``, ``cluster``, ``match`` or
``drop`` records) or, for a path ending in ``.json``, one JSON object ``{"summary": ..., "problems":
[...], "clusters": [...], "matches": [...], "drops": [...]}``. Records are spooled to a temporary
file as the run goes, so a report of millions of records costs no memory, and the report appears
atomically when the run ends.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from openm1.data.jsonl_io import AtomicWriter, split_row_id

_LABELS = {"bad_json": "bad JSON", "non_utf8": "non-UTF-8", "not_object": "not an object"}
SECTIONS = {"problem": "problems", "cluster": "clusters", "match": "matches", "drop": "drops"}


@dataclass
class Summary:
    """Counts of one run. ``rows_in`` counts every non-blank input line; each is then kept, dropped
    or malformed (``problems`` by kind: bad JSON, not an object, not UTF-8, missing field, empty key)."""

    verb: str
    rows_in: int = 0
    kept: int = 0
    dropped: int = 0
    flagged: int = 0
    problems: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)  # why rows were dropped or flagged
    against_rows: int = 0
    against_problems: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def malformed(self) -> int:
        return sum(self.problems.values())

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def stop(self) -> Summary:
        self.seconds = time.perf_counter() - self._t0
        return self

    def to_dict(self) -> dict:
        d = {
            "verb": self.verb,
            "rows_in": self.rows_in,
            "kept": self.kept,
            "dropped": self.dropped,
            "malformed": self.malformed,
            "problems": dict(self.problems),
            "reasons": dict(self.reasons),
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
        }
        if self.flagged:
            d["flagged"] = self.flagged
        if self.against_rows or self.against_problems:
            d["against_rows"] = self.against_rows
            d["against_malformed"] = sum(self.against_problems.values())
            d["against_problems"] = dict(self.against_problems)
        d.update(self.extra)
        return d

    def line(self) -> str:
        def by_kind(c: Counter) -> str:
            return ", ".join(f"{_LABELS.get(k, k.replace('_', ' '))} {v:,}" for k, v in sorted(c.items()))

        parts = [f"rows in {self.rows_in:,}", f"kept {self.kept:,}", f"dropped {self.dropped:,}"]
        if self.reasons and self.dropped:
            parts[-1] += f" ({by_kind(self.reasons)})"
        if self.flagged:
            parts.append(f"flagged {self.flagged:,} (kept, marked)")
        parts.append(
            f"malformed {self.malformed:,}" + (f" ({by_kind(self.problems)})" if self.problems else "")
        )
        if self.against_rows or self.against_problems:
            n = sum(self.against_problems.values())
            parts.append(f"against rows {self.against_rows:,}" + (f" ({n:,} malformed)" if n else ""))
        parts.append(f"{self.seconds:.1f} s")
        parts.append(f"{self.rows_per_s:,.0f} rows/s")
        return f"openm1 data {self.verb}: " + ", ".join(parts)


def ref(paths: list[str], rid: int, **more) -> dict:
    """``{"file": ..., "line": ...}`` of a row id over the given file list, plus ``more``."""
    f, line = split_row_id(rid)
    return {"file": paths[f], "line": line, **more}


class ReportWriter:
    """Spools records during a run and writes the report atomically at :meth:`finish`.

    ``path=None`` keeps nothing (records are dropped). Use as a context manager: on an exception the
    spool is deleted and no report is written.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self._spool = None
        self.count: Counter = Counter()

    def __enter__(self) -> ReportWriter:
        if self.path is not None:
            if not self.path.parent.is_dir():
                raise FileNotFoundError(f"no such folder for the report {self.path}: {self.path.parent}")
            self._spool = tempfile.TemporaryFile("w+", encoding="utf-8", dir=self.path.parent)
        return self

    def add(self, record: dict) -> None:
        self.count[record["type"]] += 1
        if self._spool is not None:
            self._spool.write(json.dumps(record, ensure_ascii=False))
            self._spool.write("\n")

    def finish(self, summary: Summary) -> None:
        if self.path is None:
            return
        s = self._spool
        s.flush()
        with AtomicWriter(self.path) as out:
            if self.path.suffix == ".json":
                out.write('{"summary": ' + json.dumps(summary.to_dict(), ensure_ascii=False))
                for kind, section in SECTIONS.items():
                    out.write(f',\n"{section}": [')
                    s.seek(0)
                    first = True
                    tag = f'{{"type": "{kind}"'  # every record is written with its type first
                    for line in s:
                        if line.startswith(tag):
                            out.write(("\n" if first else ",\n") + line.rstrip("\n"))
                            first = False
                    out.write("]")
                out.write("}\n")
            else:
                out.write_obj({"type": "summary", **summary.to_dict()})
                s.seek(0)
                for line in s:
                    out.write(line)

    def __exit__(self, *exc) -> None:
        if self._spool is not None:
            self._spool.close()
