"""``openm1 data ...`` through ``openm1.cli.main``: outputs, report paths, the summary line, bad input."""

from __future__ import annotations

import json

import pytest

from openm1.cli import main

from .helpers import planted, read_jsonl, write_jsonl


@pytest.fixture
def data(tmp_path):
    rows, distinct, source = planted(seed=1, distinct=80, copies=20)
    path = write_jsonl(tmp_path / "in.jsonl", rows, [b"{not json", b'{"id": -1}', b'{"text": "caf\xe9"}'])
    return tmp_path, path, distinct


def test_dedup_cli(data, capsys):
    tmp_path, path, distinct = data
    out = tmp_path / "out.jsonl"
    assert main(["data", "dedup", str(path), "-o", str(out), "--key", "text"]) == 0
    assert {r["id"] for r in read_jsonl(out)} == distinct
    err = capsys.readouterr().err
    assert f"{path}:101: not JSON" in err and f"{path}:102: missing field 'text'" in err
    assert f"{path}:103: not UTF-8" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("openm1 data dedup: rows in 103, kept 80, dropped 20 (minhash 20), malformed 3")
    assert last.endswith("rows/s")
    report = read_jsonl(tmp_path / "out.report.jsonl")
    assert report[0]["type"] == "summary" and report[0]["malformed"] == 3
    assert sum(r["type"] == "problem" for r in report) == 3


def test_quiet_and_json_report(data, capsys):
    tmp_path, path, _ = data
    rep = tmp_path / "r.json"
    args = ["data", "dedup", str(path), "-o", str(tmp_path / "o.jsonl"), "--key", "{text}", "--quiet"]
    assert main([*args, "--report", str(rep), "--threshold", "0.6", "--ngram", "4"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("openm1 data dedup:")
    doc = json.loads(rep.read_text())
    assert doc["summary"]["threshold"] == 0.6 and len(doc["problems"]) == 3 and doc["clusters"]


def test_no_report(data):
    tmp_path, path, _ = data
    assert (
        main(
            [
                "data",
                "dedup",
                str(path),
                "-o",
                str(tmp_path / "o.jsonl"),
                "--key",
                "text",
                "--no-report",
                "--quiet",
            ]
        )
        == 0
    )
    assert not (tmp_path / "o.report.jsonl").exists()


def test_decontaminate_and_separate_cli(tmp_path):
    bench = write_jsonl(
        tmp_path / "b.jsonl", [{"problem": "What is the sum of the first one hundred positive integers?"}]
    )
    train = write_jsonl(
        tmp_path / "t.jsonl",
        [{"q": "what is the SUM of the first one hundred positive integers"}, {"q": "Hi"}],
    )
    out = tmp_path / "o.jsonl"
    assert (
        main(
            [
                "data",
                "decontaminate",
                str(train),
                "-o",
                str(out),
                "--key",
                "q",
                "--against",
                str(bench),
                "--against-key",
                "problem",
                "--ngram",
                "8",
                "--quiet",
            ]
        )
        == 0
    )
    assert read_jsonl(out) == [{"q": "Hi"}]
    assert (
        main(
            [
                "data",
                "separate",
                str(train),
                "-o",
                str(out),
                "--key",
                "q",
                "--against",
                str(train),
                "--method",
                "exact",
                "--quiet",
            ]
        )
        == 0
    )
    assert read_jsonl(out) == []


def test_mcq_cli(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"question": "2+2? (A) 3 (B) 4", "answer": "B"}])
    out = tmp_path / "o.jsonl"
    assert main(["data", "mcq-to-open", str(path), "-o", str(out), "--original-field", "", "--quiet"]) == 0
    assert read_jsonl(out) == [{"question": "2+2?", "answer": "4"}]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--key", "{text"], "unbalanced"),
        (["--key", "text", "--threshold", "1.5"], "threshold"),
        (["--key", "text", "--shingle", "word", "--ngram", "0"], "shingle size"),
    ],
)
def test_bad_options_exit_2_and_leave_no_output(data, capsys, extra, message):
    tmp_path, path, _ = data
    out = tmp_path / "never.jsonl"
    assert main(["data", "dedup", str(path), "-o", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "never.report.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_input_and_against(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    assert main(["data", "dedup", str(tmp_path / "nope.jsonl"), "-o", str(out), "--key", "q"]) == 2
    assert "no such file" in capsys.readouterr().err
    real = write_jsonl(tmp_path / "in.jsonl", [{"q": "x y z"}])
    assert (
        main(
            [
                "data",
                "separate",
                str(real),
                "-o",
                str(out),
                "--key",
                "q",
                "--against",
                str(tmp_path / "nope.jsonl"),
            ]
        )
        == 2
    )
    assert not out.exists()
