"""Normalisation and n-gram decontamination: overlaps found across case, whitespace and punctuation."""

from __future__ import annotations

import pytest

from openm1.data.decontaminate import decontaminate
from openm1.data.ngram import NgramIndex, normalize, tokens

from .helpers import read_jsonl, write_jsonl

BENCH = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips to her "
    "friends in May. How many clips did Natalia sell altogether in April and May?"
)


@pytest.mark.parametrize(
    "variant",
    ["What is 2+3?", "what   is 2 + 3", "WHAT IS 2+3 ?!", "  What is\t2+3...", "What is 2 +3 ?"],
)
def test_normalize_removes_case_whitespace_punctuation(variant):
    assert normalize(variant) == "what is 2 + 3"


def test_normalize_keeps_symbols_and_splits_cjk():
    assert normalize("2+3") != normalize("2=3")
    assert normalize("ＡＢＣ") == "abc"  # NFKC: full-width letters
    assert tokens("下列哪个是质数？") == ["下", "列", "哪", "个", "是", "质", "数"]
    assert normalize("naïve café") == "naïve café"


def _variants(text: str) -> list[str]:
    return [
        text.upper(),
        text.replace(" ", "\n  "),
        text.replace(",", "").replace(".", "!").replace("?", " ??"),
        "Problem: " + text.lower().replace(",", " ,") + " Answer carefully.",
    ]


def test_ngram_index_finds_overlap_across_surface_changes():
    index = NgramIndex(13)
    index.add(BENCH, ref=7)
    index.add("Completely unrelated benchmark question about the area of a circle of radius 3.", ref=8)
    for v in _variants(BENCH):
        m = index.search(v)
        assert m is not None and m.ref == 7, v
        assert m.shared >= 1 and m.ref_text == BENCH
    # 12 words of the benchmark in a row are not a 13-gram
    assert index.search(" ".join(BENCH.split()[:12]) + " and then something else entirely") is None
    assert index.search("Tom has 3 apples and buys 2 more. How many apples does Tom have now?") is None


def test_short_benchmark_rows_match_when_contained():
    index = NgramIndex(13)
    index.add("What is 2+3?", ref=1)
    assert index.search("Quick question: WHAT IS 2 + 3 ? thanks").ref == 1
    assert index.search("What is 2+4?") is None


def test_decontaminate_drop_and_flag(tmp_path):
    bench = write_jsonl(
        tmp_path / "bench.jsonl", [{"problem": BENCH}, {"problem": "What is the integral of x dx?"}]
    )
    train_rows = [{"q": v, "i": i} for i, v in enumerate(_variants(BENCH))] + [
        {"q": "Tom has 3 apples and buys 2 more. How many apples does Tom have now?", "i": 99}
    ]
    train = write_jsonl(tmp_path / "train.jsonl", train_rows)
    out, rep = tmp_path / "clean.jsonl", tmp_path / "clean.report.jsonl"
    s = decontaminate([str(train)], str(out), "q", [str(bench)], "problem", report=str(rep), log=None)
    assert (s.rows_in, s.kept, s.dropped) == (5, 1, 4)
    assert read_jsonl(out) == [train_rows[-1]]
    matches = [r for r in read_jsonl(rep) if r["type"] == "match"]
    assert len(matches) == 4
    assert all(m["against"]["file"] == str(bench) and m["against"]["line"] == 1 for m in matches)
    assert all(m["against"]["text"] == BENCH for m in matches)

    flagged = tmp_path / "flagged.jsonl"
    s = decontaminate([str(train)], str(flagged), "q", [str(bench)], "problem", mode="flag", log=None)
    rows = read_jsonl(flagged)
    assert (s.kept, s.flagged, s.dropped) == (5, 4, 0)
    assert [r["contamination"] is not None for r in rows] == [True] * 4 + [False]
    assert rows[0]["contamination"]["line"] == 1 and rows[0]["i"] == 0  # every field kept
