"""Streaming JSONL: read rows one line at a time, name every bad line by file and line, write atomically.

Reading holds one line at a time; nothing else. Lines are split on ``\\n`` (a trailing ``\\r`` is
dropped), numbered from 1, decoded as strict UTF-8 and parsed as JSON; a line that fails any step,
or whose value is not a JSON object, is reported to a :class:`Problems` log as ``file:line: reason``
and skipped, so one bad line never stops a run over millions. Blank lines are skipped silently (they
are not rows). ``.gz`` paths are read and written through gzip; ``-`` reads standard input.

Writing goes to a temporary file beside the target, which replaces the target (``os.replace``) only
when the writer closes without an exception: a run that fails or is interrupted leaves the old file,
or none, never half a file.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: Row ids pack (file index, line number) into one int: ``file_index << LINE_BITS | line``.
LINE_BITS = 40


def row_id(file_index: int, line: int) -> int:
    """One int naming a row: cheap to keep by the million (see :func:`split_row_id`)."""
    return (file_index << LINE_BITS) | line


def split_row_id(rid: int) -> tuple[int, int]:
    """``(file_index, line)`` of a :func:`row_id`."""
    return rid >> LINE_BITS, rid & ((1 << LINE_BITS) - 1)


@dataclass(slots=True)
class Row:
    """One parsed line: where it came from, its exact text, its object, and (once rendered) its key."""

    file: str
    line: int
    rid: int
    raw: str
    obj: dict[str, Any]
    text: str = ""  # the rendered --key
    norm: str = ""  # the key, normalised (openm1.data.ngram.normalize)


@dataclass
class Problem:
    file: str
    line: int
    kind: str  # one of Problems.KINDS
    reason: str

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "kind": self.kind, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Problems:
    """Counts of the lines that could not be used, by kind, and a sink for each one.

    Each problem is counted, printed to ``stream`` (the first ``print_limit`` of them; the count of
    the rest at :meth:`close`) and handed to ``sink`` (a report writer's ``add``), so the full list
    lives in the report file rather than in memory.
    """

    KINDS = ("bad_json", "not_object", "non_utf8", "missing_field", "empty_key")

    stream: IO[str] | None = sys.stderr
    print_limit: int = 20
    sink: Any = None  # callable(dict) or None
    counts: Counter = field(default_factory=Counter)
    printed: int = 0

    def add(self, file: str, line: int, kind: str, reason: str) -> None:
        assert kind in self.KINDS, kind
        self.counts[kind] += 1
        p = Problem(file, line, kind, reason)
        if self.stream is not None and self.printed < self.print_limit:
            print(str(p), file=self.stream)
            self.printed += 1
        if self.sink is not None:
            self.sink({"type": "problem", **p.to_dict()})

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        hidden = self.total - self.printed
        if self.stream is not None and hidden > 0:
            print(f"... and {hidden:,} more bad lines (all are listed in the report)", file=self.stream)


def _open_read(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")


def _decode(raw: bytes) -> tuple[str | None, str]:
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"not UTF-8: byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line"


def iter_objects(
    path: str, file_index: int, problems: Problems, counter: Counter | None = None
) -> Iterator[Row]:
    """The JSON objects of one JSONL file, as :class:`Row` s; bad lines go to ``problems``.

    ``counter["rows"]`` (when given) counts every non-blank line, good or bad.
    """
    f = _open_read(path)
    try:
        for lineno, raw in enumerate(f, 1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw.strip():
                continue
            if counter is not None:
                counter["rows"] += 1
            text, why = _decode(raw)
            if text is None:
                problems.add(path, lineno, "non_utf8", why)
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                problems.add(path, lineno, "bad_json", f"not JSON: {e.msg} at column {e.colno}")
                continue
            if not isinstance(obj, dict):
                problems.add(path, lineno, "not_object", f"a JSON {type(obj).__name__}, not an object")
                continue
            yield Row(path, lineno, row_id(file_index, lineno), text, obj)
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def iter_rows(
    paths: Iterable[str], problems: Problems, counter: Counter | None = None, key=None
) -> Iterator[Row]:
    """The rows of several JSONL files in order; with ``key`` (a :class:`~openm1.data.keys.KeyTemplate`),
    only rows whose key renders, with ``row.text`` set (the others are reported as missing fields)."""
    for i, path in enumerate(paths):
        for row in iter_objects(path, i, problems, counter):
            if key is not None:
                text, missing = key.render(row.obj)
                if missing:
                    problems.add(row.file, row.line, "missing_field", f"missing field {missing!r}")
                    continue
                if not text.strip():
                    problems.add(row.file, row.line, "empty_key", f"key {key.spec!r} is empty")
                    continue
                row.text = text
            yield row


def batched(it: Iterable, n: int) -> Iterator[list]:
    """Lists of up to ``n`` items of ``it`` (itertools.batched is Python 3.12+)."""
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


class AtomicWriter:
    """A text file that appears, whole, only when the ``with`` block ends without an exception.

    Writes go to a hidden temporary file in the target's folder (so the final ``os.replace`` is a
    rename on one file system); on an exception the temporary file is removed and the target is left
    as it was. A ``.gz`` target is gzip-compressed.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._tmp: Path | None = None
        self._raw: IO[bytes] | None = None
        self.f: IO[str] | None = None

    def __enter__(self) -> AtomicWriter:
        folder = self.path.parent
        if not folder.is_dir():
            raise FileNotFoundError(f"no such folder for the output {self.path}: {folder}")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        self._tmp = Path(tmp)
        self._raw = os.fdopen(fd, "wb")
        binary: IO[bytes] = (
            gzip.GzipFile(fileobj=self._raw, mode="wb") if self.path.suffix == ".gz" else self._raw
        )
        self.f = io.TextIOWrapper(binary, encoding="utf-8", newline="\n", write_through=False)
        return self

    def write(self, s: str) -> None:
        self.f.write(s)

    def write_line(self, s: str) -> None:
        self.f.write(s)
        self.f.write("\n")

    def write_obj(self, obj: Any) -> None:
        self.write_line(json.dumps(obj, ensure_ascii=False))

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.f.close()  # flushes and closes the gzip layer, which leaves its file open
            self._raw.close()
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        if exc_type is not None:
            self._tmp.unlink(missing_ok=True)
            return
        os.replace(self._tmp, self.path)


class NullWriter:
    """Stands in for an :class:`AtomicWriter` where no file is wanted."""

    def __enter__(self) -> NullWriter:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def write(self, s: str) -> None:
        pass

    def write_line(self, s: str) -> None:
        pass

    def write_obj(self, obj: Any) -> None:
        pass
