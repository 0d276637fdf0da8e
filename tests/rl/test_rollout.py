"""Rollouts: the engine's per-token log-probs equal a full forward's, for openm1 models and for a
transformers model through its own ``generate``; the early truncation reason is kept; rewards are
guarded."""

from __future__ import annotations

import time

import pytest
import torch

from openm1.config import preset
from openm1.generate.sampling import SamplingParams
from openm1.generate.tokenizer import ByteTokenizer
from openm1.model import MiniMaxM1ForCausalLM
from openm1.rewards.base import RewardResult
from openm1.rl.curriculum import Task
from openm1.rl.logprobs import token_logprobs
from openm1.rl.rollout import rollout, score_rollout


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (and the CI machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = preset("tiny")
    return MiniMaxM1ForCausalLM(config).eval(), ByteTokenizer(config.vocab_size)


def _forward_logp(model, padded, position_ids=False):
    T = padded.response_mask.shape[1]
    kwargs = {"attention_mask": padded.attention_mask}
    if position_ids:
        kwargs["position_ids"] = (padded.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(padded.input_ids, **kwargs).logits[:, -T - 1 : -1]
    return token_logprobs(logits, padded.response_ids)[0]


def test_openm1_rollout_logprobs_equal_a_full_forward(tiny):
    model, tok = tiny
    prompts = ["Sort: 3 1", "Reverse the word abc please."]  # different lengths: left padding
    ro = rollout(model, tok, prompts, 4, SamplingParams(max_new_tokens=12), seed=3)
    assert len(ro) == 8 and ro.num_groups == 2 and ro.prompt_index == [0] * 4 + [1] * 4
    assert ro.prompts[:4] == [prompts[0]] * 4
    assert set(ro.finish_reasons) <= {"stop", "length"}
    assert [len(r) for r in ro.response_ids] == [len(lp) for lp in ro.rollout_logp]
    assert len({tuple(r) for r in ro.response_ids[:4]}) > 1  # the G samples differ
    padded = ro.padded(tok.pad_token_id)
    full = _forward_logp(model, padded)
    mask = padded.response_mask.bool()
    assert torch.allclose(full[mask], padded.rollout_logp[mask], atol=1e-4)
    assert padded.response_mask.sum() == ro.lengths.sum()


def test_rollout_is_reproducible_per_sample_seed(tiny):
    model, tok = tiny
    params = SamplingParams(max_new_tokens=6)
    a = rollout(model, tok, ["hi"], 3, params, seed=7)
    b = rollout(model, tok, ["hi", "other prompt"], 3, params, seed=7)  # more company, same first samples
    c = rollout(model, tok, ["hi"], 3, params, seed=8)
    assert a.response_ids == b.response_ids[:3]
    assert a.response_ids != c.response_ids


def test_early_truncation_reason_is_kept(tiny):
    model, tok = tiny
    # every token counts as confident with this threshold: the run of 3 ends the response
    params = SamplingParams(
        max_new_tokens=20, repetition_window=3, repetition_threshold=1e-9, ignore_eos=True
    )
    ro = rollout(model, tok, ["x"], 2, params, seed=0)
    assert ro.finish_reasons == ["repetition", "repetition"]
    assert ro.lengths.tolist() == [3, 3] and ro.truncated.all()


def test_padded_layout_and_select(tiny):
    model, tok = tiny
    ro = rollout(model, tok, [[65, 66, 67], [68]], 2, SamplingParams(max_new_tokens=5), seed=1, chat=False)
    p = ro.padded(pad_id=0)
    assert p.prompt_len == 3
    assert p.input_ids[2, :3].tolist() == [0, 0, 68] and p.attention_mask[2, :3].tolist() == [0, 0, 1]
    for i, r in enumerate(ro.response_ids):
        assert p.response_ids[i, : len(r)].tolist() == r
    sub = ro.select(torch.tensor([False, False, True, True]))
    assert sub.prompt_ids == [[68], [68]] and sub.response_ids == ro.response_ids[2:]


def test_score_rollout_guards_raising_and_hanging_rewards(tiny):
    model, tok = tiny
    ro = rollout(model, tok, ["a", "b", "c"], 2, SamplingParams(max_new_tokens=3), seed=0)

    def good(prompt, response, reference, **meta):
        return RewardResult(1.0 if reference == "ok" else 0.5)

    def boom(prompt, response, reference, **meta):
        raise RuntimeError("reward exploded")

    def hang(prompt, response, reference, **meta):
        time.sleep(5)
        return RewardResult(1.0)

    tasks = [
        Task("a", "ok", good, "s", "rule"),
        Task("b", None, boom, "s", "rule"),
        Task("c", None, hang, "s", "rule"),
    ]
    score_rollout(ro, tasks, timeout_s=0.3)
    assert ro.rewards.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert "reward exploded" in ro.reward_details[2]["error"]
    assert "timeout" in ro.reward_details[4]["error"]
    with pytest.raises(ValueError, match="tasks"):
        score_rollout(ro, tasks[:2])


def test_transformers_model_rollout_through_generate():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=258,
        bos_token_id=257,
        pad_token_id=256,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    tok = ByteTokenizer(300)
    ro = rollout(model, tok, ["Hello there", "Hi"], 3, SamplingParams(max_new_tokens=10), seed=0)
    assert len(ro) == 6 and all(len(r) <= 10 for r in ro.response_ids)
    for r, f in zip(ro.response_ids, ro.finish_reasons, strict=True):
        assert (f == "stop") == (r[-1] == 258) and 258 not in r[:-1]
    padded = ro.padded(tok.pad_token_id)
    full = _forward_logp(model, padded, position_ids=True)
    mask = padded.response_mask.bool()
    assert torch.allclose(full[mask], padded.rollout_logp[mask], atol=1e-4)
    greedy = rollout(model, tok, ["Hello there"], 1, SamplingParams(max_new_tokens=6, temperature=0.0))
    ids = torch.tensor([tok.chat_prompt([{"role": "user", "content": "Hello there"}])])
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=258, pad_token_id=256)
    expect = ref[0, ids.shape[1] :].tolist()
    assert greedy.response_ids[0] == expect[: len(greedy.response_ids[0])]
