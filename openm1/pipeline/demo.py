"""``openm1 demo``: the whole pipeline on a tiny hybrid model, sized for two CPU cores and ten minutes.

The settings are those of ``configs/pipeline-cpu.toml`` (a test keeps the two equal). The task is
pointer chasing (``variables`` at difficulty 1: follow a name to another name to a digit), because it
can only be solved by looking names up in the prompt, and a tiny model does learn that lookup
(partly) within the budget: SFT runs 1,500 short steps, long enough for the loss to fall through its
plateau (the lookup appears after about 700 steps). Letter counting and arithmetic, the first choice,
need the model to copy characters, which it never learned here; RL then only taught it the most
frequent answer (docs/pipeline.md).
"""

from __future__ import annotations

import copy
from typing import Any

from openm1.pipeline.config import PipelineConfig

DEMO: dict[str, Any] = {
    "pipeline": {"seed": 0, "device": "cpu", "threads": 1, "preset": "tiny"},
    "task": {
        "families": ["variables"],
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
        "steps": 1500,
        "lr": 2e-3,
        "min_lr": 2e-4,
        "warmup_steps": 5,
        "decay_start": 0.5,
        "seq_len": 512,
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
