"""openm1 computes what transformers' MiniMaxForCausalLM computes (float32, CPU), weights moved both ways."""

from __future__ import annotations

import pytest
import torch

from openm1.model import MiniMaxM1ForCausalLM
from tests.model.helpers import hf_config, random_config, rel_err

transformers = pytest.importorskip("transformers")

DERIVED = ("slope_rate", "query_decay", "key_decay", "diagonal_decay")


def hf_model(config):
    torch.manual_seed(1)
    return transformers.MiniMaxForCausalLM(hf_config(config)).eval()


def copy_openm1_to_hf(ours, theirs):
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected, unexpected
    assert all(name.endswith(DERIVED) for name in missing), missing


def copy_hf_to_openm1(theirs, ours):
    state = {k: v for k, v in theirs.state_dict().items() if not k.endswith(DERIVED)}
    ours.load_state_dict(state, strict=True)


@pytest.mark.parametrize("seed", range(6))
def test_logits_match_transformers_both_directions(seed):
    config = random_config(seed)
    ours = MiniMaxM1ForCausalLM(config).eval()
    theirs = hf_model(config)
    length = config.block_size * 3 + 5  # several blocks and a partial one
    ids = torch.randint(0, config.vocab_size, (2, length))

    copy_openm1_to_hf(ours, theirs)
    with torch.no_grad():
        a = ours(ids).logits
        b = theirs(ids).logits
    assert rel_err(a, b) < 1e-4

    fresh = MiniMaxM1ForCausalLM(config).eval()
    theirs2 = hf_model(config)  # new random weights, moved the other way
    copy_hf_to_openm1(theirs2, fresh)
    with torch.no_grad():
        assert rel_err(fresh(ids).logits, theirs2(ids).logits) < 1e-4


@pytest.mark.parametrize("seed", [10, 11])
def test_router_loss_matches_transformers_aux_loss(seed):
    config = random_config(seed)
    ours = MiniMaxM1ForCausalLM(config).eval()
    theirs = hf_model(config)
    copy_openm1_to_hf(ours, theirs)
    ids = torch.randint(0, config.vocab_size, (2, 21))
    with torch.no_grad():
        loss = ours(ids).router_loss
        aux = theirs(ids, output_router_logits=True).aux_loss
    assert rel_err(loss, aux) < 1e-5


def test_left_padded_batch_matches_transformers():
    config = random_config(3)
    ours = MiniMaxM1ForCausalLM(config).eval()
    theirs = hf_model(config)
    copy_openm1_to_hf(ours, theirs)
    length = config.block_size * 2 + 3
    ids = torch.randint(0, config.vocab_size, (3, length))
    mask = torch.ones(3, length, dtype=torch.long)
    mask[1, :5] = 0
    mask[2, : config.block_size + 1] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
        b = theirs(ids, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    assert rel_err(a[real], b[real]) < 1e-4


def test_decode_after_prefill_matches_transformers_generate():
    config = random_config(4)
    ours = MiniMaxM1ForCausalLM(config).eval()
    theirs = hf_model(config)
    copy_openm1_to_hf(ours, theirs)
    prompt = torch.randint(0, config.vocab_size, (1, config.block_size + 3))
    with torch.no_grad():
        expected = theirs.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        cache = ours.new_cache()
        out = ours(prompt, cache=cache)
        tokens = prompt
        for _ in range(6):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, nxt], dim=1)
            out = ours(nxt, cache=cache)
    assert torch.equal(tokens, expected)
