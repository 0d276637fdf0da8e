"""The cispo-vs-dapo experiment: steps-to-target bookkeeping on hand-made curves, and a miniature run
that writes its table, JSON and plot."""

from __future__ import annotations

import json

import pytest
import torch

from openm1.config import preset
from openm1.generate.tokenizer import ByteTokenizer
from openm1.model import MiniMaxM1ForCausalLM
from openm1.rewards.base import RewardResult
from openm1.rl import RLConfig
from openm1.rl.curriculum import Task
from openm1.rl.experiment import Arm, parse_arms, run_experiment, smoothed, steps_to_reach, summarise


def test_steps_to_reach_and_summary_by_hand():
    assert steps_to_reach([0.1, 0.4, 0.5, 0.7], 0.5) == 3
    assert steps_to_reach([0.1, 0.2], 0.5) is None
    assert smoothed([0.0, 1.0, 1.0], 2) == [0.0, 0.5, 1.0]
    curves = {
        "dapo": {0: [0.0, 0.2, 0.4, 0.6], 1: [0.0, 0.2, 0.4, 0.8]},  # final mean 0.7
        "cispo": {0: [0.0, 0.7, 0.8, 0.9], 1: [0.0, 0.5, 0.9, 0.9]},
    }
    s = summarise(curves, smooth=1)
    assert s["target_reward"] == pytest.approx(0.7)
    assert s["arms"]["dapo"]["steps_to_target"] == 4  # mean curve 0, .2, .4, .7
    assert s["arms"]["cispo"]["steps_to_target"] == 3  # mean curve 0, .6, .85, .9
    assert s["arms"]["cispo"]["steps_to_target_per_seed"] == {0: 2, 1: 3}
    assert s["arms"]["cispo"]["steps_ratio_to_baseline"] == pytest.approx(0.75)
    assert s["arms"]["dapo"]["final_reward_std"] == pytest.approx(0.1414, abs=1e-4)


def test_parse_arms():
    arms = parse_arms("dapo,cispo-eps8,cispo:eps_high=16;mask_trust_region=true")
    assert [a.name for a in arms] == ["dapo", "cispo-eps8", "cispo-eps_high16-mask_trust_regionTrue"]
    assert arms[2].overrides == {"algo": "cispo", "eps_high": 16, "mask_trust_region": True}
    with pytest.raises(ValueError, match="reinforce"):
        parse_arms("reinforce")


def test_miniature_experiment_writes_results(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MiniMaxM1ForCausalLM(preset("tiny"))

    def share(prompt, response, reference, **meta):
        return RewardResult(sum(c.isascii() and c.islower() for c in response) / max(1, len(response)))

    tasks = [Task(f"p{i}", None, share, "toy", "rule") for i in range(4)]
    base = RLConfig(group_size=2, prompts_per_step=2, length_stages=[4], steps=2, lr=1e-2, minibatches=2,
                    progress=False, tensorboard=False, repetition_window=None)  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_experiment(model, ByteTokenizer(512), tasks, base, tmp_path, [Arm("dapo", {"algo": "dapo"}),
                            Arm("cispo", {"algo": "cispo"})], seeds=[0, 1], smooth=1)  # fmt: skip
    assert set(result["arms"]) == {"dapo", "cispo"} and result["seeds"] == [0, 1]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # each run trains a copy
    assert json.loads((tmp_path / "results.json").read_text())["baseline"] == "dapo"
    assert "| cispo |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "reward.png").is_file()
    assert (tmp_path / "cispo" / "seed-1" / "metrics.jsonl").is_file()


def test_experiment_command(tmp_path, capsys):
    from openm1.cli import main

    cfg = tmp_path / "exp.toml"
    cfg.write_text(
        '[model]\npath = "tiny"\ndevice = "cpu"\n[tasks]\nfamilies = ["sorting"]\neval_size = 1\n'
        "[rl]\ngroup_size = 2\nprompts_per_step = 1\nlength_stages = [3]\nsteps = 1\ntensorboard = false\n"
    )
    args = ["experiment", "cispo-vs-dapo", "--config", str(cfg), "--out", str(tmp_path / "out")]
    assert main([*args, "--seeds", "1", "--arms", "dapo,cispo"]) == 0
    captured = capsys.readouterr()
    assert "| cispo |" in captured.out and "minibatches = 8 to 16" in captured.err  # one update: warned
    assert main([*args, "--arms", "dapo,cispo:eps_high=-1"]) == 2  # a bad arm fails before any run
    assert "eps_high" in capsys.readouterr().err
