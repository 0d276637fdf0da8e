"""The preallocated cache with per-row lengths computes what the model's simple HybridCache computes."""

from __future__ import annotations

import pytest
import torch

from openm1.generate.cache import CacheFullError, GenerationCache
from tests.generate.helpers import random_prompts, tiny_model
from tests.model.helpers import rel_err


@torch.no_grad()
def reference_logits(model, prompt, steps_tokens):
    cache = model.new_cache()
    outs = [model(torch.tensor([prompt]), cache=cache).logits[0, -1]]
    for t in steps_tokens:
        outs.append(model(torch.tensor([[t]]), cache=cache).logits[0, -1])
    return torch.stack(outs)


@pytest.mark.parametrize("seed", [0, 3])
@torch.no_grad()
def test_rows_of_different_lengths_equal_the_simple_cache(seed):
    model = tiny_model(
        seed, lm_head_fp32=False, initializer_range=0.1
    ).double()  # float64 throughout: a mistake shows
    c = model.config
    lengths = [c.block_size + 3, 5, 2 * c.block_size + 1]
    prompts = random_prompts(c.vocab_size, lengths, seed)
    steps = torch.randint(0, c.vocab_size, (3, 4))
    cache = GenerationCache(c, num_rows=5, max_len=64, dtype=torch.float64)
    rows = [3, 0, 1]  # not contiguous, not in order: the gathered path
    longest = max(lengths)
    ids = torch.zeros(3, longest, dtype=torch.long)
    mask = torch.zeros(3, longest, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p) :] = torch.tensor(p)
        mask[i, longest - len(p) :] = 1
    view = cache.view(rows)
    first = model(ids, attention_mask=mask, cache=view).logits[:, -1]
    assert [cache.lengths[r] for r in rows] == lengths
    # decode over rows 0..3 (a slice: row 2 is idle) with a different length in every row
    got = [first]
    for s in range(4):
        tok = torch.zeros(4, 1, dtype=torch.long)
        for i, r in enumerate(rows):
            tok[r, 0] = steps[i, s]
        logits = model(tok, cache=cache.view(range(4), idle=[2])).logits[:, -1]
        got.append(logits[rows])
    assert cache.lengths[2] == 0 and [cache.lengths[r] for r in rows] == [n + 4 for n in lengths]
    assert cache.lengths_t.tolist() == cache.lengths
    got = torch.stack(got, dim=1)
    for i, p in enumerate(prompts):
        assert (
            rel_err(got[i], reference_logits(model, p, steps[i].tolist())) < 1e-6
        )  # float64 model; the router and RoPE tables are float32 by design


@torch.no_grad()
def test_chunked_prefill_in_the_cache_equals_one_shot():
    model = tiny_model(2, lm_head_fp32=False, initializer_range=0.1).double()
    c = model.config
    prompts = random_prompts(c.vocab_size, [37, 20], 1)
    outs = []
    for chunk in (64, 7):
        cache = GenerationCache(c, num_rows=2, max_len=40, dtype=torch.float64)
        ids = torch.zeros(2, 37, dtype=torch.long)
        mask = torch.zeros(2, 37, dtype=torch.long)
        ids[0], mask[0] = torch.tensor(prompts[0]), 1
        ids[1, 17:], mask[1, 17:] = torch.tensor(prompts[1]), 1
        view = cache.view([0, 1])
        for a in range(0, 37, chunk):
            last = model(ids[:, a : a + chunk], attention_mask=mask[:, a : a + chunk], cache=view).logits[
                :, -1
            ]
        outs.append(last)
    assert rel_err(outs[1], outs[0]) < 1e-6  # float64 model; the router and RoPE tables are float32 by design


def test_rows_are_freed_and_reused_and_capacity_is_checked():
    model = tiny_model(0)
    cache = GenerationCache(model.config, num_rows=2, max_len=6)
    a, b = cache.allocate(), cache.allocate()
    assert (a, b) == (0, 1) and cache.free_rows == 0
    with pytest.raises(CacheFullError, match="in use"):
        cache.allocate()
    with torch.no_grad():
        model(torch.ones(1, 5, dtype=torch.long), cache=cache.view([a]))
        with pytest.raises(CacheFullError, match="max_len"):
            model(torch.ones(1, 2, dtype=torch.long), cache=cache.view([a]))
    cache.free(a)
    assert cache.allocate() == 0 and cache.lengths[0] == 0
    assert all(float(s[0].abs().sum()) == 0 for s in cache.states.values())


def test_padding_after_the_first_token_is_refused():
    model = tiny_model(0)
    cache = GenerationCache(model.config, num_rows=1, max_len=8)
    with torch.no_grad():
        model(torch.ones(1, 2, dtype=torch.long), cache=cache.view([0]))
        with pytest.raises(ValueError, match="left padding"):
            model(
                torch.ones(1, 2, dtype=torch.long),
                attention_mask=torch.tensor([[0, 1]]),
                cache=cache.view([0]),
            )
