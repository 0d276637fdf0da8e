"""Reading bad JSONL (reported by file and line, counted, skipped), atomic writing, and --key templates."""

from __future__ import annotations

import gzip
import io
from collections import Counter

import pytest

from openm1.data.jsonl_io import AtomicWriter, Problems, iter_rows, split_row_id
from openm1.data.keys import KeyTemplate

from .helpers import write_jsonl


def test_bad_lines_are_reported_with_line_numbers_and_skipped(tmp_path):
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [{"q": "one"}],
        [
            b"{broken",
            b"",
            b"   ",
            b'"a string"',
            b'{"q": "caf\xe9"}',
            b'{"other": 1}',
            b'{"q": null}',
            b'{"q": "two"}\r',
        ],
    )
    log = io.StringIO()
    records = []
    problems = Problems(stream=log, sink=records.append)
    counter = Counter()
    rows = list(iter_rows([str(path)], problems, counter, KeyTemplate("q")))
    assert [(r.line, r.text) for r in rows] == [(1, "one"), (9, "two")]
    assert split_row_id(rows[1].rid) == (0, 9)
    assert counter["rows"] == 7  # blank lines are not rows
    assert problems.counts == {"bad_json": 1, "not_object": 1, "non_utf8": 1, "missing_field": 2}
    text = log.getvalue()
    for where in (
        "in.jsonl:2: not JSON",
        "in.jsonl:5: a JSON str",
        "in.jsonl:6: not UTF-8: byte 0xe9",
        "in.jsonl:7: missing field 'q'",
        "in.jsonl:8: missing field 'q'",
    ):
        assert where in text
    assert [(r["line"], r["kind"]) for r in records] == [
        (2, "bad_json"),
        (5, "not_object"),
        (6, "non_utf8"),
        (7, "missing_field"),
        (8, "missing_field"),
    ]


def test_print_limit_then_count(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [], [b"x"] * 30)
    log = io.StringIO()
    problems = Problems(stream=log, print_limit=5)
    assert list(iter_rows([str(path)], problems)) == []
    problems.close()
    assert log.getvalue().count("not JSON") == 5
    assert "25 more bad lines" in log.getvalue()


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        list(iter_rows([str(tmp_path / "nope.jsonl")], Problems(stream=None)))


def test_atomic_writer_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with AtomicWriter(target) as w:
            w.write_line("new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary file left
    with AtomicWriter(target) as w:
        w.write_obj({"a": "é"})
    assert target.read_text(encoding="utf-8") == '{"a": "é"}\n'


def test_gzip_round_trip(tmp_path):
    target = tmp_path / "out.jsonl.gz"
    with AtomicWriter(target) as w:
        w.write_obj({"q": "zipped"})
    assert gzip.decompress(target.read_bytes()) == b'{"q": "zipped"}\n'
    rows = list(iter_rows([str(target)], Problems(stream=None), key=KeyTemplate("q")))
    assert rows[0].text == "zipped"


@pytest.mark.parametrize(
    ("spec", "obj", "expected"),
    [
        ("q", {"q": "hello"}, ("hello", None)),
        ("{q} {a}", {"q": "2+2?", "a": 4}, ("2+2? 4", None)),
        ("{meta.src}: {q}", {"q": "x", "meta": {"src": "gsm8k"}}, ("gsm8k: x", None)),
        ("opts", {"opts": ["a", "b"]}, ('["a","b"]', None)),
        ("{q} {a}", {"q": "x"}, ("", "a")),
        ("q", {"q": None}, ("", "q")),
    ],
)
def test_key_templates(spec, obj, expected):
    assert KeyTemplate(spec).render(obj) == expected


@pytest.mark.parametrize("spec", ["", "{}", "{q", "q}"])
def test_bad_key_templates(spec):
    with pytest.raises(ValueError):
        KeyTemplate(spec)
