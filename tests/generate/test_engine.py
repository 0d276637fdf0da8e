"""The engine: greedy parity with transformers and with one-at-a-time decoding, continuous batching,
chunked prefill, log-probs, stop rules and the paper's early truncation."""

from __future__ import annotations

import pytest
import torch

from openm1.generate import ByteTokenizer, Engine, SamplingParams
from tests.generate.helpers import greedy_alone, random_prompts, tiny_model

GREEDY = SamplingParams(max_new_tokens=8, temperature=0, repetition_window=None)


@pytest.mark.parametrize("seed", [4, 6])
def test_greedy_equals_transformers_generate(seed):
    """Our padded batch against transformers prompt by prompt, and an unpadded batch against its batch.

    (transformers 5.x's ``generate`` with an ``attention_mask`` is not a reference for padded batches:
    ``MiniMaxCache.get_seq_length()`` reads layer 0, a lightning layer with no keys, and returns 0, so
    the decode steps get a wrong softmax mask; even an all-ones mask changes its greedy output.)
    """
    transformers = pytest.importorskip("transformers")
    from tests.model.helpers import hf_config
    from tests.model.test_parity_transformers import copy_openm1_to_hf

    model = tiny_model(seed, rotary_full=True)
    c = model.config
    theirs = transformers.MiniMaxForCausalLM(hf_config(c)).eval()
    copy_openm1_to_hf(model, theirs)

    def hf_greedy(ids: torch.Tensor) -> list[list[int]]:
        with torch.no_grad():
            out = theirs.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
        return out[:, ids.shape[1] :].tolist()

    prompts = random_prompts(c.vocab_size, [c.block_size + 3, 4, 9, 1], seed)
    engine = Engine(model, max_batch=4, max_len=64)
    got = [r.token_ids for r in engine.generate(prompts, GREEDY)]
    assert got == [hf_greedy(torch.tensor([p]))[0] for p in prompts]

    same_length = random_prompts(c.vocab_size, [7, 7, 7], seed + 1)
    got = [r.token_ids for r in engine.generate(same_length, GREEDY)]
    assert got == hf_greedy(torch.tensor(same_length))


def test_batched_left_padded_equals_one_at_a_time():
    model = tiny_model(1)
    c = model.config
    prompts = random_prompts(c.vocab_size, [3, 2 * c.block_size + 1, 11, 1], 1)
    engine = Engine(model, max_batch=4, max_len=64, prefill_chunk=1000)
    got = [r.token_ids for r in engine.generate(prompts, GREEDY)]
    assert got == [greedy_alone(model, p, 8) for p in prompts]


def test_continuous_batching_gives_each_request_its_own_tokens():
    model = tiny_model(2)
    c = model.config
    prompts = random_prompts(c.vocab_size, [5, 17, 2, 9, 30, 4, 12], 2)
    lengths = [3, 9, 5, 12, 2, 7, 6]  # staggered: rows free up at different steps and are refilled
    params = [SamplingParams(max_new_tokens=n, temperature=0, repetition_window=None) for n in lengths]
    engine = Engine(model, max_batch=3, max_len=48)
    joined = []  # requests that entered while others were decoding
    seen_running: set[str] = set()
    ids = [engine.add_request(p, sp) for p, sp in zip(prompts, params, strict=True)]
    results = {}
    while engine.has_work():
        before = set(engine.running)
        events = engine.step()
        new = set(engine.running) | {e.request_id for e in events if e.finished}
        if before & seen_running and new - before - seen_running:
            joined.append(new - before)
        seen_running |= new
        for e in events:
            if e.finished:
                results[e.request_id] = engine.take_result(e.request_id)
    assert joined, "no request joined a running batch"
    assert engine.cache.free_rows == 3 and engine.cache.lengths == [0, 0, 0]
    for rid, p, n in zip(ids, prompts, lengths, strict=True):
        assert results[rid].token_ids == greedy_alone(model, p, n)
        assert results[rid].finish_reason == "length"


def test_chunked_prefill_equals_one_shot():
    model = tiny_model(3)
    prompts = random_prompts(model.config.vocab_size, [45, 20, 33], 3)
    one = Engine(model, max_batch=3, max_len=64, prefill_chunk=10_000).generate(prompts, GREEDY)
    chunked = Engine(model, max_batch=3, max_len=64, prefill_chunk=7).generate(prompts, GREEDY)
    assert [r.token_ids for r in chunked] == [r.token_ids for r in one]
    for a, b in zip(one, chunked, strict=True):
        # float32 with a wide init: rounding, not a bug, moves these by ~1e-3 (test_cache checks in float64)
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=5e-3)


def test_logprobs_equal_a_full_forward():
    # float64 trunk so only the float32 head's rounding separates the two paths
    model = tiny_model(5).double()
    assert model.config.lm_head_fp32
    c = model.config
    prompts = random_prompts(c.vocab_size, [6, 13], 5)
    params = SamplingParams(max_new_tokens=6, temperature=0.9, seed=3, logprobs=3, repetition_window=None)
    results = Engine(model, max_batch=2, max_len=32).generate(prompts, params)
    for p, r in zip(prompts, results, strict=True):
        seq = torch.tensor([p + r.token_ids])
        with torch.no_grad():
            logits = model(seq).logits[0].float()
        assert logits.dtype == torch.float32
        ref = torch.log_softmax(logits, -1)[len(p) - 1 : -1]
        expected = ref.gather(-1, torch.tensor(r.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(r.logprobs), expected, atol=1e-5)
        for t, alts in enumerate(r.top_logprobs):
            top = ref[t].topk(3)
            assert list(alts) == top.indices.tolist()


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch():
    model = tiny_model(6)
    prompts = random_prompts(model.config.vocab_size, [5, 8, 3], 6)
    p = SamplingParams(max_new_tokens=10, temperature=1.3, top_p=0.95, seed=11, repetition_window=None)
    alone = Engine(model, max_batch=1, max_len=32).generate([prompts[0]], p)[0].token_ids
    together = Engine(model, max_batch=3, max_len=32).generate(
        prompts, [p, SamplingParams(max_new_tokens=10, temperature=1.0, seed=5), p]
    )
    assert together[0].token_ids == alone
    other_seed = SamplingParams(
        max_new_tokens=10, temperature=1.3, top_p=0.95, seed=12, repetition_window=None
    )
    assert Engine(model, max_batch=1, max_len=32).generate([prompts[0]], other_seed)[0].token_ids != alone


def confident_hook(confident_steps: set[int]):
    """Logits that put probability ~1 on token 7 at the given decode steps, and a flat row otherwise."""
    step = {"n": 0}

    def hook(logits, request_ids):
        n = step["n"]
        step["n"] += 1
        out = torch.zeros_like(logits)
        if n in confident_steps:
            out[:, 7] = 50.0  # p(7) = 1 - tiny
        return out

    return hook


@pytest.mark.parametrize("window", [1, 5])
def test_repetition_rule_fires_exactly_after_n_confident_tokens(window):
    model = tiny_model(0)
    hook = confident_hook(set(range(3, 3 + window)))  # steps 0-2 flat, then `window` confident ones
    engine = Engine(model, max_batch=1, max_len=64, logits_hook=hook)
    p = SamplingParams(max_new_tokens=40, temperature=0, repetition_window=window, repetition_threshold=0.99)
    r = engine.generate([[1, 2, 3]], p)[0]
    assert r.finish_reason == "repetition"
    assert len(r.token_ids) == 3 + window
    assert r.token_ids[3:] == [7] * window


def test_repetition_rule_needs_consecutive_tokens_above_p():
    model = tiny_model(0)
    # 4 confident, one flat (p = 1/vocab), 4 confident: never 5 in a row
    hook = confident_hook({0, 1, 2, 3, 5, 6, 7, 8})
    p = SamplingParams(max_new_tokens=12, temperature=0, repetition_window=5, repetition_threshold=0.99)
    r = Engine(model, max_batch=1, max_len=64, logits_hook=hook).generate([[1, 2]], p)[0]
    assert r.finish_reason == "length" and len(r.token_ids) == 12
    # and a threshold above the tokens' probability never fires
    hook = confident_hook(set(range(12)))
    p = SamplingParams(max_new_tokens=12, temperature=0, repetition_window=3, repetition_threshold=0.999999)
    hook_soft = lambda logits, ids: hook(logits, ids) / 5  # p(7) = 1 - 127 e^-10 ~ 0.9942  # noqa: E731
    r = Engine(model, max_batch=1, max_len=64, logits_hook=hook_soft).generate([[1, 2]], p)[0]
    assert r.finish_reason == "length"


def test_stop_tokens_and_stop_strings():
    tok = ByteTokenizer(512)
    model = tiny_model(0, vocab_size=512)
    text = "ab</s>"
    forced = tok.encode("hello world") + tok.encode(text)

    def hook(logits, ids, state={"n": 0}):  # noqa: B006 - a counter across calls
        out = torch.full_like(logits, -30.0)
        out[:, forced[min(state["n"], len(forced) - 1)]] = 30.0
        state["n"] += 1
        return out

    engine = Engine(model, tok, max_batch=1, max_len=64, logits_hook=hook)
    r = engine.generate(["x"], SamplingParams(max_new_tokens=30, temperature=0))[0]
    assert r.finish_reason == "stop" and r.text == "hello worldab" and r.token_ids[-1] == tok.eos_token_ids[0]
    hook.__defaults__[0]["n"] = 0
    streamed = []
    p = SamplingParams(max_new_tokens=30, temperature=0, stop=["o w"])
    r = engine.generate(["x"], p, on_event=lambda e: streamed.append(e.text))[0]
    assert r.finish_reason == "stop" and r.text == "hell" and "".join(streamed) == "hell"


@pytest.mark.parametrize(
    "prompt, params, message",
    [
        ([], SamplingParams(), "empty"),
        ([1] * 60, SamplingParams(max_new_tokens=10), "max_len"),
        ([10_000], SamplingParams(), "outside the vocabulary"),
        ([3, -1], SamplingParams(), "token -1 is outside the vocabulary"),
        ([3, 1.5], SamplingParams(), "must be integers"),
        ([3, 2**70], SamplingParams(), "must be integers"),
        ([1], SamplingParams(temperature=-1), "temperature"),
        ([1], SamplingParams(top_p=0), "top_p"),
        ([1], SamplingParams(top_k=-2), "top_k"),
        ([1], SamplingParams(max_new_tokens=0), "max_new_tokens"),
        ([1], SamplingParams(repetition_threshold=1.5), "repetition_threshold"),
    ],
)
def test_bad_requests_are_named(prompt, params, message):
    engine = Engine(tiny_model(0), max_batch=1, max_len=64)
    with pytest.raises(ValueError, match=message):
        engine.add_request(prompt, params)


def test_compile_flag_does_not_break_cpu():
    model = tiny_model(1)
    prompts = random_prompts(model.config.vocab_size, [4], 1)
    with pytest.warns(UserWarning, match="CUDA"):
        engine = Engine(model, max_batch=1, max_len=32, compile=True)
    assert engine.generate(prompts, GREEDY)[0].token_ids == greedy_alone(model, prompts[0], 8)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_engine_on_cuda_matches_the_reference_loop(dtype, monkeypatch):
    monkeypatch.setenv("OPENM1_LIGHTNING_BACKEND", "torch")  # tiny head dims; the kernels test themselves
    model = tiny_model(1).to("cuda", dtype)
    c = model.config
    prompts = random_prompts(c.vocab_size, [3, 2 * c.block_size + 1, 11], 1)
    results = Engine(model, max_batch=4, max_len=64, prefill_chunk=16).generate(prompts, GREEDY)
    expected = [greedy_alone(model, p, 8) for p in prompts]
    if dtype == torch.float32:
        assert [r.token_ids for r in results] == expected
    else:  # bf16: padding changes rounding, so only most tokens agree
        same = sum(
            a == b
            for r, e in zip(results, expected, strict=True)
            for a, b in zip(r.token_ids, e, strict=True)
        )
        assert same >= 0.7 * 8 * len(prompts)
