"""RLTrainer end to end on the tiny preset: reward rises, resume equals an uninterrupted run, a NaN
update is skipped without touching the weights, a raising reward is reported, configs are validated,
the generation limit grows in stages."""

from __future__ import annotations

import json

import pytest
import torch

import openm1.rl.trainer as trainer_mod
from openm1.config import preset
from openm1.generate.tokenizer import ByteTokenizer
from openm1.model import MiniMaxM1ForCausalLM
from openm1.rewards.base import RewardResult
from openm1.rl import LengthSchedule, RLConfig, RLConfigError, RLTrainer
from openm1.rl.curriculum import Task


def lowercase_share(prompt, response, reference, **meta):
    """A toy reward a random tiny model learns in a few steps: the share of ASCII lowercase letters."""
    return RewardResult(sum(c.isascii() and c.islower() for c in response) / max(1, len(response)))


def _model(seed: int = 0) -> MiniMaxM1ForCausalLM:
    torch.manual_seed(seed)
    return MiniMaxM1ForCausalLM(preset("tiny"))


def _tasks(reward=lowercase_share, n: int = 8) -> list[Task]:
    return [Task(f"say something {i}", None, reward, "toy", "rule") for i in range(n)]


def _config(**kw) -> RLConfig:
    base = dict(
        group_size=4,
        prompts_per_step=2,
        length_stages=[6],
        lr=1e-2,
        progress=False,
        plots=False,
        tensorboard=False,
        repetition_window=None,
    )
    return RLConfig(**(base | kw))


TOK = ByteTokenizer(512)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (and the CI machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_reward_rises_on_a_toy_task(tmp_path):
    cfg = _config(steps=10, group_size=8, prompts_per_step=2, length_stages=[8], minibatches=4, plots=True)
    trainer = RLTrainer(_model(), TOK, _tasks(), cfg, tmp_path, eval_tasks=_tasks()[:2])
    history = trainer.train()
    rewards = [h["reward/mean"] for h in history]
    assert len(history) == 10 and [h["step"] for h in history] == list(range(1, 11))
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3, rewards
    last = history[-1]
    for key in ("entropy", "clip_frac", "is_weight/max", "logp_gap/abs_mean", "grad_norm", "tokens_per_s"):
        assert key in last, key
    assert last["updates"] == 4 and abs(last["logp_gap/abs_mean"]) < 1e-3  # FP32 head: engine == trainer
    assert "eval/accuracy" in last and 0.0 <= last["eval/accuracy"] <= 1.0
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward/mean"] for r in logged] == rewards
    assert (tmp_path / "plots" / "rl.png").is_file()
    assert (tmp_path / "checkpoint" / "model" / "config.json").is_file()
    scores = trainer.evaluate(_tasks()[:3])
    assert set(scores) >= {"accuracy", "mean_reward", "mean_length"}


@pytest.mark.parametrize("algo", ["dapo", "grpo", "dr_grpo", "ppo"])
def test_every_algorithm_runs_a_step(tmp_path, algo):
    kl = 0.1 if algo == "grpo" else 0.0
    cfg = _config(
        steps=1, algo=algo, group_size=2, length_stages=[4], minibatches=2, micro_batch=1, kl_coef=kl
    )
    history = RLTrainer(_model(), TOK, _tasks(), cfg, tmp_path).train()
    assert history[0]["updates"] == 2 and history[0]["nan_skipped"] == 0


def test_resume_equals_uninterrupted(tmp_path):
    cfg = _config(steps=3, minibatches=2, checkpoint_every=1)
    straight = RLTrainer(_model(), TOK, _tasks(), cfg, tmp_path / "a")
    h_straight = straight.train()

    RLTrainer(
        _model(), TOK, _tasks(), _config(steps=2, minibatches=2, checkpoint_every=1), tmp_path / "b"
    ).train()
    resumed = RLTrainer(_model(), TOK, _tasks(), cfg, tmp_path / "b")
    h_resumed = resumed.train()
    assert [h["step"] for h in h_resumed] == [1, 2, 3]
    assert [h["reward/mean"] for h in h_resumed] == [h["reward/mean"] for h in h_straight]
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    logged = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]


def test_nan_loss_skips_the_update_and_keeps_the_weights(tmp_path, monkeypatch):
    real = trainer_mod.policy_loss

    def nan_loss(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        return loss * float("nan"), metrics

    monkeypatch.setattr(trainer_mod, "policy_loss", nan_loss)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = RLTrainer(model, TOK, _tasks(), _config(steps=1, minibatches=2), tmp_path)
    with pytest.warns(UserWarning, match="non-finite loss"):
        history = trainer.train()
    assert history[0]["nan_skipped"] == 2 and history[0]["updates"] == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not trainer.optimizer.state  # AdamW never stepped


def test_raising_reward_is_reported_and_the_run_goes_on(tmp_path):
    def broken(prompt, response, reference, **meta):
        raise KeyError("no such field")

    tasks = _tasks(broken, 2) + _tasks(lowercase_share, 2)
    history = RLTrainer(_model(), TOK, tasks, _config(steps=2, prompts_per_step=4), tmp_path).train()
    assert all(h["reward_errors"] > 0 for h in history)
    assert "no such field" in history[0]["reward_error_example"]


def test_dynamic_sampling_skips_batches_without_signal(tmp_path):
    const = _tasks(lambda *a, **k: RewardResult(1.0))
    h = RLTrainer(_model(), TOK, const, _config(steps=1, dynamic_sampling=True), tmp_path).train()[0]
    assert h["groups_dropped"] == 2 and "update_skipped" in h


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"algo": "reinforce"}, "algo"),
        ({"lr": -1.0}, "lr"),
        ({"group_size": 1}, "group_size"),
        ({"length_stages": [64, 32]}, "length_stages"),
        ({"mask_trust_region": True, "algo": "dapo"}, "mask_trust_region"),
        ({"kl_coef": 0.1}, "kl_coef"),
        ({"tis_cap": 2.0, "temperature": 0.7}, "tis_cap"),
        ({"minibatches": 100, "group_size": 2, "prompts_per_step": 2}, "minibatches"),
        ({"betas": [0.9, 1.5]}, "betas"),
    ],
)
def test_bad_config_fields_are_named(fields, named):
    with pytest.raises(RLConfigError, match=named):
        RLConfig(**fields)


def test_config_files_and_unknown_fields(tmp_path):
    good = tmp_path / "rl.toml"
    good.write_text('[rl]\nalgo = "dapo"\nlength_stages = [32, 64]\nbetas = [0.9, 0.99]\n')
    cfg = RLConfig.from_file(good)
    assert cfg.algo == "dapo" and cfg.length_stages == [32, 64] and cfg.betas == (0.9, 0.99)
    bad = tmp_path / "bad.toml"
    bad.write_text("algo = 'cispo'\nlearning_rate = 0.1\n")
    with pytest.raises(RLConfigError, match="learning_rate"):
        RLConfig.from_file(bad)
    yml = tmp_path / "rl.yaml"
    yml.write_text("rl:\n  group_size: 4\n  eps_high: 2.0\n")
    assert RLConfig.from_file(yml).eps_high == 2.0
    assert RLConfig.from_dict(cfg.to_dict()) == cfg
    docs = RLConfig.field_docs()
    assert set(docs) == set(cfg.to_dict()) and all(docs.values())  # every field documented


def test_length_schedule_advances_on_stable_indicators():
    s = LengthSchedule([16, 32, 64], window=3, max_truncation_rate=0.1)
    assert [s.update(0.5, 0.1) for _ in range(4)] == [False] * 4  # truncating: stay
    assert [s.update(0.0, r) for r in (0.1, 0.2, 0.3)] == [False, False, True] and s.current == 32
    assert [s.update(0.0, r) for r in (0.9, 0.5, 0.1)] == [False] * 3  # reward falling: stay
    state = s.state_dict()
    t = LengthSchedule([16, 32, 64], window=3, max_truncation_rate=0.1)
    t.load_state_dict(state)
    assert t.current == 32 and t.update(0.0, 0.5) == s.update(0.0, 0.5)


def test_trainer_grows_the_generation_limit(tmp_path):
    cfg = _config(
        steps=3,
        length_stages=[2, 4],
        length_window=1,
        length_max_truncation=1.0,
        length_reward_tolerance=10.0,
    )
    history = RLTrainer(_model(), TOK, _tasks(), cfg, tmp_path).train()
    assert [h["max_new_tokens"] for h in history] == [2, 4, 4]
    assert history[0]["length_stage_advanced"] is True


def test_one_update_per_batch_measures_the_gap_without_an_extra_pass(tmp_path):
    h = RLTrainer(_model(), TOK, _tasks(), _config(steps=1), tmp_path / "a").train()[0]
    assert h["updates"] == 1 and h["logp_gap/abs_max"] < 1e-3
    h = RLTrainer(
        _model(), TOK, _tasks(), _config(steps=1, minibatches=2, recompute_old_logp=False), tmp_path / "b"
    )
    assert "logp_gap/abs_mean" not in h.train()[0]


def test_a_transformers_model_trains_and_resumes(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=258,
        pad_token_id=256,
    )

    def llama():
        torch.manual_seed(0)
        return transformers.LlamaForCausalLM(config)

    tok = ByteTokenizer(300)
    cfg = _config(steps=2, checkpoint_every=1)
    a = RLTrainer(llama(), tok, _tasks(), cfg, tmp_path / "a")
    h = a.train()
    assert h[0]["logp_gap/abs_max"] < 1e-3 and h[0]["updates"] == 1
    RLTrainer(llama(), tok, _tasks(), _config(steps=1), tmp_path / "b").train()
    b = RLTrainer(llama(), tok, _tasks(), cfg, tmp_path / "b")
    assert [x["reward/mean"] for x in b.train()] == [x["reward/mean"] for x in h]
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_shared_prompt_forward_equals_the_padded_forward():
    from openm1.generate.sampling import SamplingParams
    from openm1.rl.logprobs import token_logprobs
    from openm1.rl.rollout import rollout
    from openm1.rl.trainer import shared_prompt_logprobs

    model = _model().double()  # float64 trunk: the comparison sees the algorithm, not rounding
    prompts = ["Sort these numbers: 3 1 2, then explain.", "Reverse abc", "Count the a's in banana"]
    ro = rollout(model, TOK, prompts, 3, SamplingParams(max_new_tokens=10), seed=0)
    b = ro.padded(TOK.pad_token_id)[torch.tensor([4, 0, 8, 1, 5, 2])]  # shuffled, as a minibatch
    T = b.response_mask.shape[1]
    logits = model(b.input_ids, attention_mask=b.attention_mask, logits_to_keep=T + 1).logits[:, :-1]
    full, full_ent = token_logprobs(logits, b.response_ids, with_entropy=True)
    shared, shared_ent = shared_prompt_logprobs(model, b, with_entropy=True)
    mask = b.response_mask
    assert torch.allclose(full * mask, shared * mask, atol=1e-5)
    assert torch.allclose(full_ent * mask, shared_ent * mask, atol=1e-5)
    params = list(model.parameters())
    g_full = torch.autograd.grad((full * mask).sum(), params, allow_unused=True)
    g_shared = torch.autograd.grad((shared * mask).sum(), params, allow_unused=True)
    for a, c in zip(g_full, g_shared, strict=True):
        assert (a is None) == (c is None)
        if a is not None:
            assert torch.allclose(a, c, atol=1e-5, rtol=1e-4)


def test_minibatches_hold_whole_groups_when_they_can(tmp_path):
    trainer = RLTrainer(
        _model(), TOK, _tasks(), _config(group_size=4, prompts_per_step=4, minibatches=2), tmp_path
    )
    mbs = trainer._minibatches(16, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(mbs).tolist()) == list(range(16)) and len(mbs) == 2
    for mb in mbs:
        assert {int(i) // 4 for i in mb} == {int(i) // 4 for i in mb[::4]}  # whole groups
        assert len(mb) == 8
    trainer.config.minibatches = 3  # 4 groups in 3 minibatches: 2 + 1 + 1 groups
    assert [len(mb) for mb in trainer._minibatches(16, torch.Generator().manual_seed(0))] == [8, 4, 4]
    trainer.config.minibatches = 8  # more minibatches than groups: rows
    assert [len(mb) for mb in trainer._minibatches(16, torch.Generator().manual_seed(0))] == [2] * 8


@pytest.mark.gpu
def test_on_cuda_shared_prompt_and_graphed_rollouts_follow_the_updates(tmp_path):
    """Triton lightning kernels (with their initial-state gradient) and CUDA-graph decoding: the
    shared-prompt forward equals the padded one, and after updates the graphed engine still samples
    from the current weights (the trainer/rollout log-prob gap stays at rounding level)."""
    from openm1.generate.sampling import SamplingParams
    from openm1.rl.logprobs import token_logprobs
    from openm1.rl.rollout import rollout
    from openm1.rl.trainer import shared_prompt_logprobs

    model = _model().cuda()
    ro = rollout(
        model, TOK, ["Sort these numbers: 3 1 2.", "Reverse abc"], 4, SamplingParams(max_new_tokens=12)
    )
    b = ro.padded(TOK.pad_token_id, "cuda")
    T = b.response_mask.shape[1]
    logits = model(b.input_ids, attention_mask=b.attention_mask, logits_to_keep=T + 1).logits[:, :-1]
    full = token_logprobs(logits, b.response_ids)[0]
    shared = shared_prompt_logprobs(model, b)[0]
    mask = b.response_mask
    assert torch.allclose(full * mask, shared * mask, atol=2e-3)
    params = [p for p in model.parameters()]
    g_full = torch.autograd.grad((full * mask).sum(), params, allow_unused=True)
    g_shared = torch.autograd.grad((shared * mask).sum(), params, allow_unused=True)
    for a, c in zip(g_full, g_shared, strict=True):
        if a is not None:
            assert torch.allclose(a, c, atol=1e-3, rtol=1e-2)
    cfg = _config(steps=3, minibatches=2, cuda_graph=True, lr=1e-3)
    history = RLTrainer(_model().cuda(), TOK, _tasks(), cfg, tmp_path).train()
    assert all(h["logp_gap/abs_max"] < 1e-2 for h in history), [h["logp_gap/abs_max"] for h in history]
    assert history[-1]["updates"] == 2
