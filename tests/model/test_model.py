"""The model's own invariants: caching, padding, packing, dtype handling, bad input."""

from __future__ import annotations

import pytest
import torch

from openm1.config import preset
from openm1.model import MiniMaxM1ForCausalLM
from tests.model.helpers import random_config, rel_err


@pytest.mark.parametrize("seed", [0, 5, 7])
def test_prefill_then_token_by_token_decode_equals_full_forward(seed):
    config = random_config(seed, rotary_full=False)
    model = MiniMaxM1ForCausalLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (2, 2 * config.block_size + 7))
    split = config.block_size + 2
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache()
        parts = [model(ids[:, :split], cache=cache).logits]
        for t in range(split, ids.shape[1]):
            parts.append(model(ids[:, t : t + 1], cache=cache).logits)
    assert rel_err(torch.cat(parts, dim=1), full) < 1e-5
    assert cache.get_seq_length() == ids.shape[1]


def test_chunked_prefill_equals_full_forward():
    config = random_config(2, rotary_full=False)
    model = MiniMaxM1ForCausalLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, 40))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache()
        parts = [model(ids[:, a : a + 13], cache=cache).logits for a in range(0, 40, 13)]
    assert rel_err(torch.cat(parts, dim=1), full) < 1e-5


def test_left_padding_equals_each_sequence_alone_and_decodes():
    config = random_config(1, rotary_full=False)
    model = MiniMaxM1ForCausalLM(config).eval()
    lengths = [config.block_size + 5, 4, 2 * config.block_size]
    longest = max(lengths)
    seqs = [torch.randint(0, config.vocab_size, (n,)) for n in lengths]
    ids = torch.zeros(len(seqs), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(seqs):
        ids[row, longest - len(s) :] = s
        mask[row, longest - len(s) :] = 1
    nxt = torch.randint(0, config.vocab_size, (len(seqs), 1))
    with torch.no_grad():
        cache = model.new_cache()
        batched = model(ids, attention_mask=mask, cache=cache).logits
        mask2 = torch.cat([mask, torch.ones(len(seqs), 1, dtype=torch.long)], dim=1)
        step = model(nxt, attention_mask=mask2, cache=cache).logits
        for row, s in enumerate(seqs):
            alone_cache = model.new_cache()
            alone = model(s[None], cache=alone_cache).logits[0]
            assert rel_err(batched[row, longest - len(s) :], alone) < 1e-5
            alone_step = model(nxt[row : row + 1], cache=alone_cache).logits[0]
            assert rel_err(step[row], alone_step) < 1e-5


def test_packed_documents_equal_separate_forwards():
    config = random_config(6, rotary_full=False)
    model = MiniMaxM1ForCausalLM(config).eval()
    lengths = [5, config.block_size + 3, 1, 9]
    docs = [torch.randint(0, config.vocab_size, (n,)) for n in lengths]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    with torch.no_grad():
        packed = model(torch.cat(docs)[None], cu_seqlens=cu).logits[0]
        for i, d in enumerate(docs):
            alone = model(d[None]).logits[0]
            assert rel_err(packed[cu[i] : cu[i + 1]], alone) < 1e-5


def test_gradients_flow_to_every_parameter():
    config = random_config(8, rotary_full=False)
    model = MiniMaxM1ForCausalLM(config)
    ids = torch.randint(0, config.vocab_size, (2, 19))
    out = model(ids)
    loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    (loss + 0.01 * out.router_loss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if "experts" not in name:  # an expert no token chose may get no gradient
            assert p.grad.abs().sum() > 0, name


def test_bf16_model_keeps_fp32_head_and_buffers():
    model = MiniMaxM1ForCausalLM(preset("tiny")).to(torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    attn = model.model.layers[0].self_attn
    assert attn.slopes.dtype == torch.float32 and model.model.rotary.inv_freq.dtype == torch.float32
    out = model(torch.randint(0, 256, (1, 20)))
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.logits).all()


def test_active_parameters_count_top_k_experts():
    config = preset("tiny")
    model = MiniMaxM1ForCausalLM(config)
    experts = sum(
        layer.mlp.experts.gate_up_proj.numel() + layer.mlp.experts.down_proj.numel()
        for layer in model.model.layers
    )
    assert model.num_parameters() - model.num_parameters(active=True) == experts // 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(attention_mask=torch.ones(2, 5)), "attention_mask"),
        (dict(position_ids=torch.arange(3)[None]), "position_ids"),
        (dict(cu_seqlens=torch.tensor([0, 2, 4])), "end at the packed length"),
        (dict(cu_seqlens=torch.tensor([0, 4, 2, 6])), "must not decrease"),
    ],
)
def test_bad_inputs_are_named(kwargs, message):
    model = MiniMaxM1ForCausalLM(preset("tiny"))
    ids = torch.randint(0, 256, (2 if "cu_seqlens" not in kwargs else 1, 6))
    with pytest.raises(ValueError, match=message):
        model(ids, **kwargs)
