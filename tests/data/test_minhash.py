"""MinHash: datasketch's signatures bit for bit, its LSH keys, and constructed near-duplicates found."""

from __future__ import annotations

import random

import numpy as np
import pytest

datasketch = pytest.importorskip("datasketch")

from openm1.data.dedup import dedup  # noqa: E402
from openm1.data.minhash import MinHasher, MinHashIndex, shingle_hashes  # noqa: E402
from openm1.data.ngram import normalize  # noqa: E402
from openm1.data.pipeline import MinHashOptions  # noqa: E402

from .helpers import near_copy, planted, read_jsonl, sentence, write_jsonl  # noqa: E402

TEXTS = [
    normalize(t)
    for t in ["Hello world, this is a test.", "ab", "汉字测试文本很长的句子", "one two three four five six"]
]


@pytest.mark.parametrize(("shingle", "n"), [("char", 5), ("char", 1), ("word", 3), ("word", 1)])
def test_signatures_equal_datasketch(shingle, n):
    hashes, offsets = shingle_hashes(TEXTS, shingle, n)
    sigs = MinHasher(64, seed=3, shingle=shingle, n=n).signatures(TEXTS)
    for i in range(len(TEXTS)):
        m = datasketch.MinHash(num_perm=64, seed=3, hashfunc=int)
        m.update_batch(hashes[offsets[i] : offsets[i + 1]].tolist())
        np.testing.assert_array_equal(m.hashvalues, sigs[i])


def test_shingles_are_per_text_and_order_sensitive():
    hashes, offsets = shingle_hashes(["abcdefg", "ab", "gfedcba"], "char", 5)
    assert offsets.tolist() == [0, 3, 4, 7]
    assert set(hashes[0:3].tolist()).isdisjoint(hashes[4:7].tolist())
    # a text's shingles do not depend on its neighbours in the batch
    alone, _ = shingle_hashes(["gfedcba"], "char", 5)
    np.testing.assert_array_equal(alone, hashes[4:7])


def test_jaccard_estimate_tracks_true_jaccard():
    rng = random.Random(1)
    idx = MinHashIndex(threshold=0.5, num_perm=256)
    a = sentence(rng, 40)
    b = near_copy(rng, a)
    sa, sb = idx.signatures([normalize(a), normalize(b)])
    h, o = shingle_hashes([normalize(a), normalize(b)], "char", 5)
    x, y = set(h[o[0] : o[1]].tolist()), set(h[o[1] : o[2]].tolist())
    assert abs((sa == sb).mean() - len(x & y) / len(x | y)) < 0.1


def test_band_keys_are_datasketchs():
    """Rows added through the batched band keys are found by datasketch's own MinHashLSH.query."""
    idx = MinHashIndex(threshold=0.6)
    sigs = idx.signatures(TEXTS)
    idx.add(sigs, [10, 11, 12, 13])
    for k, sig in enumerate(sigs):
        probe = datasketch.MinHash(num_perm=128, hashvalues=sig, scheme="affine32")
        assert k in idx.lsh.query(probe)
    assert [m[0] for m in idx.search(sigs)] == [10, 11, 12, 13]


def test_dedup_finds_planted_near_duplicates_and_keeps_distinct_rows(tmp_path):
    rows, distinct, source = planted(seed=0)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out, rep = tmp_path / "out.jsonl", tmp_path / "rep.jsonl"
    s = dedup([str(path)], str(out), "text", "minhash", report=str(rep), batch_size=64, log=None)
    kept = read_jsonl(out)
    assert {r["id"] for r in kept} == distinct
    assert kept == rows[: len(distinct)]  # every field, in input order
    assert (s.rows_in, s.kept, s.dropped, s.malformed) == (len(rows), len(distinct), len(source), 0)
    clusters = [r for r in read_jsonl(rep) if r["type"] == "cluster"]
    found = {d["line"] - 1: c["kept"]["line"] - 1 for c in clusters for d in c["duplicates"]}
    assert found == source
    assert all(d["score"] >= 0.7 for c in clusters for d in c["duplicates"])
    assert s.extra["clusters"] == len(set(source.values()))


def test_exact_copy_of_a_dropped_row_points_at_the_kept_row(tmp_path):
    rng = random.Random(5)
    a = sentence(rng)
    b = near_copy(rng, a)
    path = write_jsonl(tmp_path / "in.jsonl", [{"t": a}, {"t": b}, {"t": b.lower() + "!!"}])
    rep = tmp_path / "rep.jsonl"
    for batch_size in (1, 3):
        dedup([str(path)], str(tmp_path / "o.jsonl"), "t", report=str(rep), batch_size=batch_size, log=None)
        (cluster,) = [r for r in read_jsonl(rep) if r["type"] == "cluster"]
        assert cluster["kept"]["line"] == 1
        assert [(d["line"], d["method"]) for d in cluster["duplicates"]] == [(2, "minhash"), (3, "exact")]


def test_high_threshold_keeps_near_copies(tmp_path):
    rows, distinct, source = planted(seed=2, distinct=50, copies=20)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    s = dedup([str(path)], None, "text", minhash=MinHashOptions(threshold=0.98), log=None)
    assert s.kept == len(rows)
    with pytest.raises(ValueError, match="--method exact"):
        dedup([str(path)], None, "text", minhash=MinHashOptions(threshold=1.0), log=None)


def test_word_shingles(tmp_path):
    rows = [
        {"t": "the quick brown fox jumps over the lazy dog " * 3},
        {"t": "THE quick brown fox jumps over the lazy dog " * 3 + "!"},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    s = dedup([str(path)], None, "t", minhash=MinHashOptions(shingle="word", ngram=3), log=None)
    assert (s.kept, s.dropped) == (1, 1)
