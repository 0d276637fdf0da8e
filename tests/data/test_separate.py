"""separate: RL rows that equal (after normalisation) or nearly equal SFT rows are removed."""

from __future__ import annotations

import random

from openm1.data.separate import separate

from .helpers import near_copy, read_jsonl, sentence, write_jsonl


def _sets(tmp_path):
    rng = random.Random(7)
    sft = [
        {"messages": [{"role": "user", "content": sentence(rng)}], "prompt": sentence(rng)} for _ in range(40)
    ]
    rl = [
        {"question": sft[0]["prompt"].upper() + " ?!", "id": "exact"},  # exact after normalisation
        {"question": near_copy(rng, sft[1]["prompt"]), "id": "near"},
        {"question": sentence(rng), "id": "fresh-1"},
        {"question": sentence(rng), "id": "fresh-2"},
    ]
    return write_jsonl(tmp_path / "sft.jsonl", sft), write_jsonl(tmp_path / "rl.jsonl", rl)


def test_separate_exact_and_minhash(tmp_path):
    sft, rl = _sets(tmp_path)
    out, rep = tmp_path / "out.jsonl", tmp_path / "rep.jsonl"
    s = separate([str(rl)], str(out), "question", [str(sft)], "prompt", report=str(rep), log=None)
    assert [r["id"] for r in read_jsonl(out)] == ["fresh-1", "fresh-2"]
    assert (s.rows_in, s.kept, s.dropped, s.against_rows) == (4, 2, 2, 40)
    matches = [r for r in read_jsonl(rep) if r["type"] == "match"]
    assert [(m["row"]["line"], m["method"], m["against"]["line"]) for m in matches] == [
        (1, "exact", 1),
        (2, "minhash", 2),
    ]


def test_separate_exact_only_keeps_near_copies(tmp_path):
    sft, rl = _sets(tmp_path)
    s = separate([str(rl)], None, "question", [str(sft)], "prompt", method="exact", log=None)
    assert (s.kept, s.dropped) == (3, 1)


def test_against_problems_counted_apart(tmp_path):
    sft, rl = _sets(tmp_path)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"no_prompt": 1}], [b"{oops"])
    s = separate([str(rl)], None, "question", [str(sft), str(bad)], "prompt", log=None)
    assert s.against_problems == {"missing_field": 1, "bad_json": 1}
    assert s.malformed == 0 and s.against_rows == 42
