"""The paper's CISPO-vs-DAPO comparison in miniature: several algorithms ("arms"), the same model,
tasks, steps, batch and seeds; reward curves with their spread over seeds, and the steps each arm
needs to reach DAPO's final reward.

Every run is an ordinary :class:`RLTrainer` run in ``out_dir/<arm>/seed-<s>`` (so an interrupted
experiment resumes run by run, and finished runs are not redone). The comparison only means something
with several minibatch updates per rollout batch (the paper: 16): with one, CISPO's and DAPO's
gradients are identical (see docs/rl.md).
"""

from __future__ import annotations

import copy
import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from openm1.config import atomic_write_text
from openm1.rl.config import RLConfig
from openm1.rl.trainer import RLTrainer

#: The paper's comparison plus a small sweep of CISPO's cap on the weight (eps_high; default 4.0).
DEFAULT_ARMS = {
    "dapo": {"algo": "dapo"},
    "grpo": {"algo": "grpo"},
    "cispo": {"algo": "cispo"},
    "cispo-eps2": {"algo": "cispo", "eps_high": 2.0},
    "cispo-eps8": {"algo": "cispo", "eps_high": 8.0},
}
BASELINE = "dapo"


@dataclass
class Arm:
    """One algorithm setting: a name and the RLConfig fields it changes."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


def run_experiment(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: Any,
    base: RLConfig,
    out_dir: str | os.PathLike,
    arms: Sequence[Arm] | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    eval_tasks: Sequence[Any] | None = None,
    smooth: int = 5,
    on_run: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Run every arm with every seed from a copy of ``model`` and summarise (see :func:`summarise`);
    writes ``results.json``, ``results.md`` and ``reward.png`` into ``out_dir``."""
    arms = list(arms or [Arm(k, v) for k, v in DEFAULT_ARMS.items()])
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    out = Path(out_dir)
    curves: dict[str, dict[int, list[float]]] = {}
    finals: dict[str, dict[int, dict[str, Any]]] = {}
    for arm in arms:
        for seed in seeds:
            if on_run is not None:
                on_run(arm.name, seed)
            config = RLConfig.from_dict(base.to_dict() | arm.overrides | {"seed": seed, "plots": False})
            run_dir = out / arm.name / f"seed-{seed}"
            trainer = RLTrainer(
                copy.deepcopy(model), tokenizer, tasks, config, run_dir, eval_tasks=eval_tasks
            )
            history = trainer.train()
            curves.setdefault(arm.name, {})[seed] = [float(h["reward/mean"]) for h in history]
            finals.setdefault(arm.name, {})[seed] = {
                k: v for k, v in history[-1].items() if k.startswith("eval/")
            }
    result = summarise(curves, smooth=smooth, baseline=BASELINE if BASELINE in curves else names[0])
    result["eval"] = finals
    result["config"] = base.to_dict()
    result["arm_overrides"] = {a.name: a.overrides for a in arms}
    result["seeds"] = list(seeds)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "results.md", markdown_table(result))
    plot_curves(curves, out / "reward.png", smooth=smooth)
    return result


def smoothed(curve: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (window 1: the curve itself)."""
    out = []
    for i in range(len(curve)):
        part = curve[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def steps_to_reach(curve: Sequence[float], target: float) -> int | None:
    """The first step (1-based) at which ``curve`` reaches ``target``; None if it never does."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target), None)


def summarise(
    curves: dict[str, dict[int, list[float]]], smooth: int = 5, baseline: str = BASELINE
) -> dict[str, Any]:
    """Per arm: final smoothed reward (mean and std over seeds) and the steps to reach the baseline's
    final reward (mean of the baseline's seeds), per seed and on the seed-mean curve, with the ratio to
    the baseline's own steps. The paper's claim is CISPO's ratio <= 0.5."""
    if baseline not in curves:
        raise ValueError(f"baseline arm {baseline!r} is not among {sorted(curves)}")
    smooth_curves = {a: {s: smoothed(c, smooth) for s, c in runs.items()} for a, runs in curves.items()}
    target = statistics.mean(c[-1] for c in smooth_curves[baseline].values())
    summary: dict[str, Any] = {"baseline": baseline, "target_reward": target, "smooth": smooth, "arms": {}}
    base_steps = None
    for arm, runs in smooth_curves.items():
        finals = [c[-1] for c in runs.values()]
        length = min(len(c) for c in runs.values())
        mean_curve = [statistics.mean(c[i] for c in runs.values()) for i in range(length)]
        per_seed = {s: steps_to_reach(c, target) for s, c in runs.items()}
        reach = steps_to_reach(mean_curve, target)
        if arm == baseline:
            base_steps = reach
        summary["arms"][arm] = {
            "final_reward_mean": statistics.mean(finals),
            "final_reward_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "steps_to_target": reach,
            "steps_to_target_per_seed": per_seed,
            "mean_curve": mean_curve,
        }
    for stats in summary["arms"].values():
        reach = stats["steps_to_target"]
        stats["steps_ratio_to_baseline"] = reach / base_steps if reach and base_steps else None
    return summary


def markdown_table(result: dict[str, Any]) -> str:
    base = result["baseline"]
    lines = [
        f"Target: {base}'s final reward {result['target_reward']:.3f} (moving average over "
        f"{result['smooth']} steps, mean over seeds {result.get('seeds', '')}).",
        "",
        f"| arm | final reward (mean ± std) | steps to target | ratio to {base} |",
        "| --- | --- | --- | --- |",
    ]
    for arm, s in result["arms"].items():
        reach = s["steps_to_target"] if s["steps_to_target"] is not None else "not reached"
        ratio = f"{s['steps_ratio_to_baseline']:.2f}" if s["steps_ratio_to_baseline"] else "-"
        lines.append(
            f"| {arm} | {s['final_reward_mean']:.3f} ± {s['final_reward_std']:.3f} | {reach} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict[str, dict[int, list[float]]], path: Path, smooth: int = 5) -> Path | None:
    """Reward against steps per arm: the seed mean, and a band from the lowest to the highest seed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, runs in curves.items():
        sm = [smoothed(c, smooth) for c in runs.values()]
        n = min(len(c) for c in sm)
        xs = list(range(1, n + 1))
        mean = [statistics.mean(c[i] for c in sm) for i in range(n)]
        ax.plot(xs, mean, label=f"{arm} ({len(sm)} seeds)")
        ax.fill_between(
            xs,
            [min(c[i] for c in sm) for i in range(n)],
            [max(c[i] for c in sm) for i in range(n)],
            alpha=0.2,
        )
    ax.set_xlabel("step")
    ax.set_ylabel(f"reward (moving average, {smooth} steps)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def parse_arms(spec: str) -> list[Arm]:
    """``"dapo,cispo,cispo:eps_high=8"`` -> arms; a bare name is a DEFAULT_ARMS key or an algorithm."""
    from openm1.rl.losses import ALGORITHMS

    arms = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, opts = item.partition(":")
        if name in DEFAULT_ARMS and not opts:
            arms.append(Arm(name, dict(DEFAULT_ARMS[name])))
            continue
        if name not in ALGORITHMS:
            raise ValueError(f"arm {name!r}: not an algorithm ({', '.join(ALGORITHMS)}) or a preset arm "
                             f"({', '.join(DEFAULT_ARMS)})")  # fmt: skip
        overrides: dict[str, Any] = {"algo": name}
        for kv in filter(None, opts.split(";")):
            key, _, value = kv.partition("=")
            overrides[key] = json.loads(value)
        label = name + "".join(f"-{k}{v}" for k, v in overrides.items() if k != "algo")
        arms.append(Arm(label, overrides))
    if not arms:
        raise ValueError("no arms given")
    return arms


__all__ = ["Arm", "DEFAULT_ARMS", "parse_arms", "run_experiment", "steps_to_reach", "summarise"]
