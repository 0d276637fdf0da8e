"""The graphed prefill: a prompt left-padded to its bucket fills the cache row exactly as the unpadded
prefill does (on the CPU, eagerly: the padding logic itself), and replayed graphs give the tokens the
eager engine gives (on a GPU)."""

from __future__ import annotations

import pytest
import torch

from openm1.generate import Engine, SamplingParams
from openm1.generate.cache import GenerationCache
from openm1.generate.prefill_graphs import PaddedPrefillView, prefill_bucket
from tests.generate.helpers import random_prompts, tiny_model
from tests.model.helpers import rel_err


@pytest.mark.parametrize("length", [1, 7, 64, 65, 500, 513, 1000, 1025, 1300, 2048, 2049, 5000, 9000])
def test_buckets_hold_the_prompt_with_at_most_a_quarter_of_padding_above_512(length):
    size = prefill_bucket(length)
    assert size >= length and size % 64 == 0
    assert size < 1.25 * length if length > 512 else (size == 64 or size < 2 * length)
    assert prefill_bucket(size) == size  # a bucket is its own bucket
    assert prefill_bucket(length + 1) >= size  # longer prompts never get a smaller bucket


def test_a_bucket_needs_a_token():
    with pytest.raises(ValueError, match="at least one token"):
        prefill_bucket(0)


def _unpadded(model, prompt: list[int], row: int, max_len: int):  # noqa: ANN001, ANN202
    cache = GenerationCache(model.config, 3, max_len, dtype=torch.float64)
    cache.allocate(), cache.allocate()
    view = cache.view([row])
    logits = model(torch.tensor([prompt]), cache=view, logits_to_keep=1).logits[:, -1]
    return cache, logits


@pytest.mark.parametrize(("length", "time"), [(9, 16), (16, 16), (5, 40)])
def test_padded_prefill_fills_the_row_as_the_unpadded_one(length, time):
    model = tiny_model(4).double()
    prompt = random_prompts(model.config.vocab_size, [length], 4)[0]
    row, max_len = 1, 48
    ref_cache, ref_logits = _unpadded(model, prompt, row, max_len)

    cache = GenerationCache(model.config, 3, max_len, dtype=torch.float64)
    cache.allocate(), cache.allocate()
    view = PaddedPrefillView(cache, time)
    view.load(row, torch.tensor(prompt), pad_token_id=3)
    with torch.no_grad():
        logits = model(view.tokens, attention_mask=view.mask, cache=view, logits_to_keep=1).logits[:, -1]
    assert rel_err(logits, ref_logits) < 1e-9
    assert cache.lengths_t.tolist() == ref_cache.lengths_t.tolist() == [0, length, 0]
    for i in cache.states:
        assert rel_err(cache.states[i], ref_cache.states[i]) < 1e-9, f"layer {i} state"
    for i in cache.keys:  # the real tokens' slots; padding only ever touches the row's last slot
        for got, want in ((cache.keys[i], ref_cache.keys[i]), (cache.values[i], ref_cache.values[i])):
            assert rel_err(got[:, : max_len - 1], want[:, : max_len - 1]) < 1e-9, f"layer {i} kv"


def test_padded_prefill_rejects_what_it_cannot_hold():
    model = tiny_model(4)
    cache = GenerationCache(model.config, 1, 16)
    with pytest.raises(ValueError, match="max_len"):
        PaddedPrefillView(cache, 16)
    view = PaddedPrefillView(cache, 8)
    with pytest.raises(ValueError, match="1 to 8"):
        view.load(0, torch.arange(9))


def test_prefill_graphs_are_off_on_the_cpu_and_a_bad_limit_is_named():
    model = tiny_model(1)
    with pytest.warns(UserWarning, match="CUDA"):
        assert Engine(model, max_batch=1, max_len=32, cuda_graph=True)._prefill_graphs is None
    with pytest.raises(ValueError, match="prefill_graph_max"):
        Engine(model, max_batch=1, max_len=32, prefill_graph_max=-1)


@pytest.mark.gpu
def test_graphed_prefill_gives_the_eager_tokens(monkeypatch):
    monkeypatch.setenv("OPENM1_LIGHTNING_BACKEND", "torch")  # tiny head dims; the kernels test themselves
    model = tiny_model(2).to("cuda")
    prompts = random_prompts(model.config.vocab_size, [5, 17, 64, 40, 17, 100], 2)
    params = SamplingParams(max_new_tokens=6, temperature=0, repetition_window=None)
    eager = Engine(model, max_batch=1, max_len=160, experts="dense")
    graphed = Engine(model, max_batch=1, max_len=160, experts="dense", cuda_graph=True, prefill_graph_max=128)
    assert graphed._prefill_graphs is not None
    for prompt in prompts:  # one at a time: each prefill is a lone prompt, so each is graphed
        want = eager.generate([prompt], params)[0]
        got = graphed.generate([prompt], params)[0]
        assert got.token_ids == want.token_ids
        assert max(abs(a - b) for a, b in zip(got.logprobs, want.logprobs, strict=True)) < 1e-4
    assert sorted(graphed._prefill_graphs.graphs) == [64, 128]  # 5, 17, 40 and 64 share one graph


@pytest.mark.gpu
def test_graphed_bf16_prefill_takes_flash_varlen_and_matches_the_float64_reference(monkeypatch):
    """The replayed graph runs the softmax layers' segments through flash varlen (no mask)."""
    from openm1.generate.inference import InferenceForms
    from openm1.generate.prefill_graphs import PrefillGraphs
    from openm1.model.segments import flash_varlen_usable

    monkeypatch.setenv("OPENM1_LIGHTNING_BACKEND", "torch")  # tiny head dims; the kernels test themselves
    # two experts, both always chosen: no routing decision for bf16 rounding to flip
    fields = dict(num_local_experts=2, num_experts_per_tok=2, initializer_range=0.1)
    reference = tiny_model(4, **fields).double()
    model = tiny_model(4, **fields).to("cuda", torch.bfloat16)
    c = model.config
    probe = torch.zeros(1, 1, c.num_attention_heads, c.head_dim, device="cuda", dtype=torch.bfloat16)
    assert flash_varlen_usable(probe)
    graphs = None
    for length in (40, 64, 23):  # a fresh capture, then replays of the same bucket
        prompt = random_prompts(c.vocab_size, [length], length)[0]
        ref_cache, ref_logits = _unpadded(reference, prompt, 1, 160)
        if graphs is None:
            cache = GenerationCache(c, 3, 160, device="cuda", dtype=torch.bfloat16)
            graphs = PrefillGraphs(model, cache, InferenceForms(model, "dense"), 128)
        cache.reset_row(1)
        logits = graphs(1, torch.tensor(prompt)).float().cpu()
        assert torch.isfinite(logits).all()
        assert rel_err(logits, ref_logits) < 3e-2, length
        assert cache.lengths_t[1].item() == length
        for i in cache.states:
            assert rel_err(cache.states[i][1].cpu(), ref_cache.states[i][1]) < 3e-2, f"layer {i} state"
    assert sorted(graphs.graphs) == [64]
