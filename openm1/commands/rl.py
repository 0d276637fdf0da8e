"""``openm1 rl --config FILE``: RL-train a checkpoint or a preset on logic puzzles or a prompt file.

The config file (TOML, or YAML with pyyaml) has three tables: ``[model]`` (``path``: a checkpoint
folder or a preset name; ``device``; ``seed`` of a preset's random weights), ``[tasks]`` (puzzle
``families`` and ``difficulty``, or a JSONL prompt ``file`` scored by ``reward``; ``eval_size``
held-out tasks) and ``[rl]`` (the fields of :class:`openm1.rl.RLConfig`). See configs/rl-*.toml.

``torchrun --nproc-per-node N -m openm1 rl --config FILE`` runs it on N processes (openm1 models;
``[model] device`` is then each rank's own GPU, or the CPU): see docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

MODEL_KEYS = {"path", "device", "seed", "dtype"}
TASK_KEYS = {"families", "difficulty", "file", "reward", "reward_options", "eval_file", "eval_size"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rl",
        help="RL-train a model with CISPO (or GRPO, DAPO, PPO, Dr. GRPO)",
        description="RL training from a config file: rollouts through the generation engine, verifiable "
        "rewards, group advantages, several minibatch updates per rollout batch. Writes metrics.jsonl, "
        "TensorBoard events, plots/rl.png and a resumable checkpoint/ under --out.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="TOML or YAML: [model], [tasks], [rl]")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/rl-<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--steps", type=int, help="override [rl] steps")
    add_threads_argument(p)
    p.set_defaults(func=run)


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice). Tiny models on a busy machine run far "
        "faster with 1: their small operations lose more to waiting for threads than they gain",
    )


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def run(args: argparse.Namespace) -> int:
    from openm1.generate.loading import load_model
    from openm1.rl import RLConfig, RLTrainer
    from openm1.rl.config import load_config_file

    data = load_config_file(args.config)
    unknown = sorted(set(data) - {"model", "tasks", "rl"})
    if unknown:
        raise ValueError(f"{args.config}: unknown table(s) {unknown}; use [model], [tasks] and [rl]")
    model_cfg = _table(data, "model", MODEL_KEYS, args.config)
    rl_table = dict(data.get("rl", {}))
    if args.steps is not None:
        rl_table["steps"] = args.steps
    config = RLConfig.from_dict(rl_table)
    out = Path(args.out or Path("runs") / f"rl-{Path(args.config).stem}")
    if (out / "checkpoint").exists() and not args.resume:
        raise ValueError(f"{out} already holds a checkpoint: pass --resume to continue it, or another --out")
    if args.resume and not (out / "checkpoint").exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {out}")
    tasks, eval_tasks = build_tasks(
        _table(data, "tasks", TASK_KEYS, args.config), config.seed, Path(args.config).parent
    )

    if "path" not in model_cfg:
        raise ValueError(f"{args.config}: [model] needs path = a checkpoint folder or a preset name")
    import torch

    from openm1.distributed.env import barrier, is_main_process, maybe_init_distributed

    apply_threads(args)
    env = maybe_init_distributed()  # under torchrun: every rank loads the same weights on its device
    device = model_cfg.get("device") if env is None else str(env.device)
    model, tok, name = load_model(
        str(model_cfg["path"]), device, model_cfg.get("dtype"), int(model_cfg.get("seed", 0))
    )
    torch.manual_seed(config.seed)
    n_train = len(tasks) if isinstance(tasks, list) else "generated"
    ranks = "" if env is None else f" on {env.world_size} processes"
    if is_main_process():
        print(
            f"openm1 rl: {name} ({model.num_parameters() / 1e6:.2f}M parameters), algo {config.algo}, "
            f"{config.steps} steps of {config.prompts_per_step}x{config.group_size} rollouts{ranks}; "
            f"tasks: {n_train}, held out: {len(eval_tasks)}; writing to {out}",
            file=sys.stderr,
        )
    barrier()  # every rank has checked --out before rank 0 writes into it
    trainer = RLTrainer(model, tok, tasks, config, out, eval_tasks=eval_tasks)
    history = trainer.train()
    last = history[-1] if history else {}
    summary = {
        "steps": trainer.step,
        "reward/mean": last.get("reward/mean"),
        "eval/accuracy": last.get("eval/accuracy"),
        "checkpoint": str(trainer.checkpoint_dir),
        "metrics": str(out / "metrics.jsonl"),
    }
    if is_main_process():
        print(json.dumps(summary))
    return 0


def _table(data: dict, name: str, allowed: set[str], path: str) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [{name}] must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown [{name}] field(s) {unknown}; valid: {sorted(allowed)}")
    return table


def build_tasks(table: dict[str, Any], seed: int, base: Path = Path(".")) -> tuple[Any, list]:
    """Training tasks (a Curriculum of puzzles, or a list of Task from a prompt file) and held-out ones."""
    from openm1.rl.curriculum import Curriculum, PuzzleSource

    eval_size = table.get("eval_size", 32)
    if not isinstance(eval_size, int) or eval_size < 0:
        raise ValueError(f"[tasks] eval_size must be a non-negative integer, got {eval_size!r}")
    if ("file" in table) == ("families" in table):
        raise ValueError(
            "[tasks] needs exactly one of families = [...] (logic puzzles) or file = 'prompts.jsonl'"
        )
    if "families" in table:
        difficulty = table.get("difficulty", 1)
        source = PuzzleSource(list(table["families"]), difficulty=difficulty)
        rng = random.Random(f"held-out:{seed}")  # other seeds than training draws (curriculum:{seed}:{step})
        held_out = [source.sample(rng) for _ in range(eval_size)]
        return Curriculum(rule=[source], seed=seed), held_out
    from openm1.rewards import make_reward

    reward = make_reward(table.get("reward", "math"), **table.get("reward_options", {}))
    rows = read_prompt_file(_resolve(table["file"], base), reward)
    if "eval_file" in table:
        held_out = read_prompt_file(_resolve(table["eval_file"], base), reward)[:eval_size]
    else:
        if len(rows) <= eval_size:
            raise ValueError(
                f"{table['file']} has {len(rows)} usable rows, not enough to hold out "
                f"eval_size = {eval_size}; lower eval_size or give eval_file"
            )
        rows, held_out = rows[: len(rows) - eval_size], rows[len(rows) - eval_size :]
    return rows, held_out


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else base / p


def read_prompt_file(path: str | Path, reward: Any) -> list:
    """Tasks from JSONL rows ``{"prompt": ..., "answer": ...}`` (``reference`` also accepted). Malformed
    rows are reported on stderr with their line number and skipped."""
    from openm1.rl.curriculum import Task

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    tasks, bad = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(f"{path}:{n}: not valid JSON ({e.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            bad.append(f'{path}:{n}: needs a non-empty "prompt" string')
            continue
        ref_key = "answer" if "answer" in row else "reference" if "reference" in row else None
        if ref_key is None:
            bad.append(f'{path}:{n}: needs an "answer" (or "reference") to score against')
            continue
        meta = {k: v for k, v in row.items() if k not in ("prompt", ref_key)}
        tasks.append(Task(row["prompt"], row[ref_key], reward, path.stem, "rule", meta))
    for msg in bad:
        print(f"openm1 rl: skipped {msg}", file=sys.stderr)
    if not tasks:
        raise ValueError(f"{path} holds no usable rows ({len(bad)} malformed)")
    return tasks
