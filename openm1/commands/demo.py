"""``openm1 demo --out DIR``: pretrain, SFT and CISPO RL on a tiny hybrid model, with the report."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole pipeline (pretrain, SFT, CISPO RL, evaluation) on a tiny model, with a report",
        description="Build a tiny hybrid model (lightning and softmax layers, MoE), pretrain it on generated "
        "puzzle text, SFT it on worked chains of thought, run CISPO RL on held-apart prompts, evaluate on "
        "held-out prompts after each stage, and write summary.json, report.md, samples.md and plots/ to "
        "--out. About 10 minutes on two CPU cores. The settings are configs/pipeline-cpu.toml.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (created)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, auto")
    p.add_argument("--preset", default="tiny", help="model preset (default tiny; its vocab must be >= 261)")
    p.add_argument("--resume", action="store_true", help="continue a stopped demo in --out")
    p.add_argument(
        "--quick", action="store_true", help="a few steps per stage (a smoke test, under a minute)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from openm1.pipeline.demo import demo_config
    from openm1.pipeline.runner import run_pipeline

    summary = run_pipeline(
        demo_config(args.device, args.preset, quick=args.quick), args.out, resume=args.resume
    )
    _print_summary(summary, args.out)
    return 0


def _print_summary(summary: dict, out: str) -> None:
    print()
    for st in summary["stages"]:
        greedy = st.get("greedy_accuracy")
        print(
            f"{st['stage']:>9}: held-out accuracy {100 * st['accuracy']:5.1f}%"
            + (f" (greedy {100 * greedy:5.1f}%)" if greedy is not None else "")
            + f", {st['time_s']:6.0f} s, {st['tokens_per_s']:8,.0f} tokens/s"
        )
    if "rl_gain_points" in summary:
        print(f"RL over SFT: {summary['rl_gain_points']:+.1f} points")
    print(f"wall time {summary['wall_s']:.0f} s; report: {out}/report.md")
    print(json.dumps({"summary": f"{out}/summary.json"}))
