"""The engine's inference forms compute the model's function; the sync-free paths of the cache and the
one-step-ahead decode loop give the tokens of the plain reference loop."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.bias import CausalBias

from openm1.generate import Engine, GenerationCache, SamplingParams
from openm1.generate.inference import InferenceForms, grouped_mm_supported, resolve_expert_form
from tests.generate.helpers import greedy_alone, random_prompts, tiny_model
from tests.model.helpers import rel_err

GREEDY = SamplingParams(max_new_tokens=7, temperature=0, repetition_window=None)
HAS_GROUPED = grouped_mm_supported("cpu", torch.float32, None)


def _grouped_on_cuda() -> bool:
    cap = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    return grouped_mm_supported("cuda", torch.bfloat16, cap)


@pytest.mark.parametrize("experts", ["reference", "dense", "grouped"])
@pytest.mark.parametrize("seed", [0, 3])
def test_forms_compute_the_model_and_are_undone(experts, seed):
    if experts == "grouped" and not HAS_GROUPED:
        pytest.skip("this torch has no CPU torch._grouped_mm")
    model = tiny_model(seed)
    if experts != "grouped":
        model = model.double()
    ids = torch.randint(0, model.config.vocab_size, (3, 13))
    with torch.no_grad():
        ref = model(ids)
        with InferenceForms(model, experts):
            fast = model(ids)
        after = model(ids)
    # float32 router and norm statistics in both (grouped_mm: float32 throughout): only rounding differs
    assert rel_err(fast.logits, ref.logits) < 1e-4
    assert fast.router_loss.item() == 0 and ref.router_loss.item() > 0  # no statistics at inference
    assert torch.equal(after.logits, ref.logits) and torch.equal(after.router_loss, ref.router_loss)


@pytest.mark.gpu
@pytest.mark.parametrize("experts", ["dense", "grouped"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_cuda_forms_compute_the_model(experts, dtype, monkeypatch):
    """On CUDA the forms run the fused Triton kernels (openm1.ops.fused); they still compute the model."""
    if experts == "grouped" and (dtype != torch.bfloat16 or not _grouped_on_cuda()):
        pytest.skip("grouped_mm needs bf16 on compute capability 9.0+")
    monkeypatch.setenv("OPENM1_LIGHTNING_BACKEND", "torch")  # tiny head dims; the kernels test themselves
    # two experts, both always chosen: no routing decision for bf16 rounding to flip
    model = tiny_model(5, num_local_experts=2, num_experts_per_tok=2, initializer_range=0.1).to("cuda", dtype)
    ids = torch.randint(0, model.config.vocab_size, (3, 40), device="cuda")
    with torch.no_grad():
        ref = model(ids)
        with InferenceForms(model, experts):
            fast = model(ids)
    assert torch.isfinite(fast.logits).all()
    assert rel_err(fast.logits, ref.logits) < (1e-5 if dtype == torch.float32 else 2e-2)


def test_unknown_or_unavailable_forms_are_named():
    with pytest.raises(ValueError, match="unknown experts form 'sparse'"):
        resolve_expert_form("sparse", torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="grouped experts form needs torch._grouped_mm"):
        resolve_expert_form("grouped", torch.device("cpu"), torch.float64)
    assert resolve_expert_form("auto", torch.device("cpu"), torch.float32) == "reference"
    assert resolve_expert_form("auto", torch.device("cpu"), torch.float32, decode=True) == "dense"


@pytest.mark.skipif(not HAS_GROUPED, reason="this torch has no CPU torch._grouped_mm")
def test_engine_with_grouped_experts_equals_the_reference_loop():
    model = tiny_model(2)
    prompts = random_prompts(model.config.vocab_size, [5, 17, 2, 9], 2)
    engine = Engine(model, max_batch=3, max_len=48, experts="grouped")
    got = [r.token_ids for r in engine.generate(prompts, GREEDY)]
    assert got == [greedy_alone(model, p, 7) for p in prompts]


def test_later_prefill_chunks_use_an_end_aligned_causal_mask_and_match_one_shot():
    model = tiny_model(4).double()
    c = model.config
    prompt = random_prompts(c.vocab_size, [3 * c.block_size + 5], 4)[0]
    cache = GenerationCache(c, 1, 64, dtype=torch.float64)
    view = cache.view([0])
    first = view.layout(None, 8)
    assert first.attention_bias is None  # an empty row: plain causal
    view.advance(8)
    later = cache.view([0]).layout(None, 8)
    assert isinstance(later.attention_bias, CausalBias)  # no [time, keys] mask materialised

    params = SamplingParams(max_new_tokens=5, temperature=0, logprobs=2, repetition_window=None)
    one = Engine(model, max_batch=1, max_len=64, prefill_chunk=1000).generate([prompt], params)[0]
    chunked = Engine(model, max_batch=1, max_len=64, prefill_chunk=6).generate([prompt], params)[0]
    assert chunked.token_ids == one.token_ids
    assert torch.allclose(torch.tensor(chunked.logprobs), torch.tensor(one.logprobs), atol=1e-9)


def test_known_padding_counts_equal_the_mask_read_back():
    model = tiny_model(1).double()
    c = model.config
    ids = torch.randint(0, c.vocab_size, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    outs = []
    for hint in (None, [4, 6]):
        cache = GenerationCache(c, 2, 32, dtype=torch.float64)
        view = cache.view([0, 1])
        view.real_counts = hint
        with torch.no_grad():
            outs.append(model(ids, attention_mask=mask, cache=view).logits)
        assert cache.lengths == [4, 6]
    assert torch.equal(outs[0], outs[1])
    view = GenerationCache(c, 2, 32).view([0, 1])
    view.real_counts = [4]
    with pytest.raises(ValueError, match="real_counts has 1 rows but the forward has 2"):
        model(ids, attention_mask=mask, cache=view)


def test_one_step_ahead_decoding_drops_the_extra_token_of_a_stopped_row():
    """A request that stops on a token has had one more step launched; that token must not leak, and
    the row's next tenant must decode as if it were alone."""
    model = tiny_model(2)
    c = model.config
    prompts = random_prompts(c.vocab_size, [5, 9, 4], 7)
    alone = [greedy_alone(model, p, 12) for p in prompts]
    stop_at = alone[0][3]  # the first request stops on its 4th token (or earlier, if it repeats)
    cut = alone[0].index(stop_at) + 1
    params = [
        SamplingParams(max_new_tokens=12, temperature=0, stop_token_ids=[stop_at], repetition_window=None),
        SamplingParams(max_new_tokens=12, temperature=0, repetition_window=None),
        SamplingParams(max_new_tokens=12, temperature=0, repetition_window=None),
    ]
    engine = Engine(model, max_batch=2, max_len=32)  # the third request waits for the first's row
    results = engine.generate(prompts, params)
    assert results[0].token_ids == alone[0][:cut] and results[0].finish_reason == "stop"
    assert len(results[0].logprobs) == cut
    assert [r.token_ids for r in results[1:]] == alone[1:]
    assert engine.cache.lengths == [0, 0] and engine.cache.free_rows == 2


def _smooth_peaked_model(seed: int, device: str) -> torch.nn.Module:
    """A bf16 model whose trunk is smooth (small weights: bf16 rounding stays small) and whose LM head
    gives logits of a few units (so a wrong context moves log-probs by nats, rounding by hundredths)."""
    model = tiny_model(seed, initializer_range=0.05)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 3.0 / model.config.hidden_size**0.5)
    return model.to(device, torch.bfloat16)


def _assert_logprobs_match_a_full_forward(model, prompts, results) -> None:  # noqa: ANN001
    """Teacher-forced: the engine's log-prob of each token it chose equals a plain full forward's."""
    for p, r in zip(prompts, results, strict=True):
        seq = torch.tensor([p + r.token_ids], device=next(model.parameters()).device)
        with torch.no_grad():
            logits = model(seq).logits[0, len(p) - 1 : -1].float()
        ref = torch.log_softmax(logits, -1).gather(-1, seq[0, len(p) :, None]).squeeze(-1).cpu()
        # bf16 kernels differ between the paths by ~1e-2; a wrong row or stale state moves them by nats
        assert (ref - torch.tensor(r.logprobs)).abs().max().item() < 0.3


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_bf16_decoding_and_the_auto_graph_match_a_full_forward(device, monkeypatch):
    """On CUDA: both sync-free MoE forms are captured and timed, the faster is kept, and decoding with it
    (and with the grouped form) gives the log-probs of a full forward; on the CPU, the eager path."""
    monkeypatch.setenv("OPENM1_LIGHTNING_BACKEND", "torch")  # tiny head dims; the kernels test themselves
    model = _smooth_peaked_model(0, device)
    prompts = random_prompts(model.config.vocab_size, [5, 17, 2, 9], 3)
    grouped = device == "cpu" and HAS_GROUPED or device == "cuda" and _grouped_on_cuda()
    if grouped:
        ids = torch.tensor([p[:2] for p in prompts], device=device)
        with torch.no_grad():
            ref = model(ids).logits
            with InferenceForms(model, "grouped"):
                fast = model(ids).logits
        assert rel_err(fast, ref) < 2e-2  # bf16

    engine = Engine(model, max_batch=3, max_len=48, cuda_graph=device == "cuda")
    if device == "cuda" and grouped:
        assert set(engine.graph_ms) == {"grouped", "dense"}
        assert engine.experts_graph == min(engine.graph_ms, key=engine.graph_ms.get)
    results = engine.generate(prompts, GREEDY)
    _assert_logprobs_match_a_full_forward(model, prompts, results)
    assert engine.cache.lengths == [0, 0, 0]
    if grouped:
        engine = Engine(model, max_batch=3, max_len=48, cuda_graph=device == "cuda", experts="grouped")
        assert device == "cpu" or engine.experts_graph == "grouped"
        _assert_logprobs_match_a_full_forward(model, prompts, engine.generate(prompts, GREEDY))
