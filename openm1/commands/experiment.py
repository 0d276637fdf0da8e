"""``openm1 experiment cispo-vs-dapo``: the paper's comparison in miniature (see openm1.rl.experiment).

Takes the same config file as ``openm1 rl`` ([model]: ideally an SFT checkpoint, [tasks], [rl]); runs
each arm with each seed, then writes results.json, results.md (the table) and reward.png under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from openm1.commands.rl import add_threads_argument, apply_threads

EXPERIMENTS = ("cispo-vs-dapo",)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="run a packaged experiment (cispo-vs-dapo)",
        description="cispo-vs-dapo: CISPO, DAPO and GRPO (and CISPO's eps_high sweep) on the same model, "
        "tasks, steps, batch and seeds; a reward plot with the spread over seeds and a table of the steps "
        "each arm needs to reach DAPO's final reward. Use several minibatch updates per rollout batch "
        "([rl] minibatches = 8 to 16): with one, CISPO and DAPO are the same algorithm.",
    )
    p.add_argument("name", choices=EXPERIMENTS)
    p.add_argument("--config", required=True, metavar="FILE", help="as openm1 rl: [model], [tasks], [rl]")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/<name>)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per arm (default 5)")
    p.add_argument(
        "--arms",
        default="dapo,grpo,cispo,cispo-eps2,cispo-eps8",
        help="comma-separated: preset arms (dapo, grpo, cispo, cispo-eps2, cispo-eps8) or "
        "algo:field=value;field=value (e.g. cispo:eps_high=16)",
    )
    p.add_argument("--steps", type=int, help="override [rl] steps")
    p.add_argument("--smooth", type=int, default=5, help="moving-average window of the curves (default 5)")
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from openm1.commands.rl import MODEL_KEYS, TASK_KEYS, _table, build_tasks
    from openm1.generate.loading import load_model
    from openm1.rl import RLConfig
    from openm1.rl.config import load_config_file
    from openm1.rl.experiment import parse_arms, run_experiment

    apply_threads(args)
    data = load_config_file(args.config)
    unknown = sorted(set(data) - {"model", "tasks", "rl"})
    if unknown:
        raise ValueError(f"{args.config}: unknown table(s) {unknown}; use [model], [tasks] and [rl]")
    if args.seeds < 1 or args.smooth < 1:
        raise ValueError("--seeds and --smooth must be positive")
    model_cfg = _table(data, "model", MODEL_KEYS, args.config)
    rl_table = dict(data.get("rl", {})) | ({"steps": args.steps} if args.steps else {})
    base = RLConfig.from_dict(rl_table | {"progress": False})
    arms = parse_arms(args.arms)
    for arm in arms:  # validate every arm's config before spending hours on the first
        RLConfig.from_dict(base.to_dict() | arm.overrides)
    if base.updates_per_step < 2:
        print(
            "openm1 experiment: warning: one update per rollout batch makes CISPO and DAPO identical; "
            "set [rl] minibatches = 8 to 16",
            file=sys.stderr,
        )
    tasks, held_out = build_tasks(
        _table(data, "tasks", TASK_KEYS, args.config), base.seed, Path(args.config).parent
    )
    if "path" not in model_cfg:
        raise ValueError(f"{args.config}: [model] needs path = a checkpoint folder or a preset name")
    model, tok, name = load_model(
        str(model_cfg["path"]), model_cfg.get("device"), model_cfg.get("dtype"), int(model_cfg.get("seed", 0))
    )
    torch.manual_seed(0)
    out = Path(args.out or Path("runs") / args.name)

    def on_run(arm: str, seed: int) -> None:
        print(f"openm1 experiment: {arm} seed {seed} ({base.steps} steps)", file=sys.stderr)

    result = run_experiment(
        model, tok, tasks, base, out, arms, range(args.seeds), held_out, smooth=args.smooth, on_run=on_run
    )
    print((out / "results.md").read_text())
    print(json.dumps({"results": str(out / "results.json"), "plot": str(out / "reward.png"), "model": name}))
    return 0 if result else 1
