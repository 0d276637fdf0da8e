"""``openm1 demo``: the whole pipeline on a tiny hybrid model, sized for two CPU cores and ten minutes.

The settings are those of ``configs/pipeline-cpu.toml`` (a test keeps the two equal). The task
(arithmetic and letter counting at difficulty 1) and the stage lengths are chosen so that SFT leaves
headroom (it imitates the worked solutions but slips on some steps) and RL has signal (groups of 8
samples with mixed rewards), so CISPO can raise the held-out accuracy on its own.
"""

from __future__ import annotations

import copy
from typing import Any

from openm1.pipeline.config import PipelineConfig

DEMO: dict[str, Any] = {
    "pipeline": {"seed": 0, "device": "cpu", "threads": 1, "preset": "tiny"},
    "task": {
        "families": ["arithmetic", "counting"],
        "difficulty": 1,
        "eval_size": 120,
        "rl_size": 800,
        "sft_size": 3000,
        "pretrain_size": 3000,
    },
    "eval": {"samples": 4, "temperature": 1.0, "greedy": True, "max_new_tokens": 64, "show": 4},
    "pretrain": {
        "steps": 100,
        "lr": 3e-3,
        "min_lr": 3e-4,
        "warmup_steps": 10,
        "decay_start": 0.5,
        "seq_len": [[0, 512], [50, 1024]],
        "aux_coef_start": 0.01,
        "aux_coef_end": 0.001,
    },
    "sft": {
        "steps": 150,
        "lr": 2e-3,
        "min_lr": 2e-4,
        "warmup_steps": 5,
        "decay_start": 0.5,
        "seq_len": 1024,
        "aux_coef_start": 0.001,
        "aux_coef_end": 0.001,
    },
    "rl": {
        "algo": "cispo",
        "steps": 150,
        "group_size": 8,
        "prompts_per_step": 8,
        "temperature": 1.0,
        "length_stages": [64],
        "lr": 3e-4,
        "minibatches": 2,
        "overlong_cache": 16,
        "checkpoint_every": 50,
    },
}


def demo_config(
    device: str = "cpu", preset: str = "tiny", quick: bool = False, overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    """The demo's configuration; ``quick`` shrinks every stage to a few steps (the CI smoke test)."""
    d = copy.deepcopy(DEMO)
    d["pipeline"] |= {"device": device, "preset": preset}
    if device != "cpu":
        d["pipeline"]["threads"] = 0
    if quick:
        d["task"] |= {"eval_size": 8, "rl_size": 16, "sft_size": 64, "pretrain_size": 64}
        d["eval"] |= {"samples": 2, "max_new_tokens": 24}
        d["pretrain"] |= {"steps": 3, "seq_len": [[0, 256], [2, 512]], "warmup_steps": 1}
        d["sft"] |= {"steps": 3, "seq_len": 512, "warmup_steps": 1}
        d["rl"] |= {
            "steps": 2,
            "group_size": 2,
            "prompts_per_step": 2,
            "length_stages": [24],
            "checkpoint_every": 1,
        }
    for table, values in (overrides or {}).items():
        d.setdefault(table, {}).update(values)
    return PipelineConfig.from_dict(d)
