"""``openm1 run PIPELINE.toml``: the pipeline's stages from a config file (see docs/pipeline.md)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a pipeline (pretrain, SFT, RL, evaluation) from a TOML file",
        description="Run the stages a pipeline file describes ([pipeline], [task], [eval], [pretrain], "
        "[sft], "
        "[rl]; every field is documented in docs/pipeline.md and validated before anything runs). "
        "Examples: configs/pipeline-cpu.toml, configs/pipeline-gpu.toml. On several processes: "
        "torchrun --nproc-per-node N -m openm1 run ... (docs/scale.md).",
    )
    p.add_argument("config", metavar="PIPELINE.toml")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (created)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run from its last checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from openm1.commands.demo import _print_summary
    from openm1.distributed.env import is_main_process
    from openm1.pipeline.config import PipelineConfig
    from openm1.pipeline.runner import run_pipeline

    summary = run_pipeline(PipelineConfig.load(args.config), args.out, resume=args.resume)
    if is_main_process():  # under torchrun every rank returns the summary; rank 0 prints it
        _print_summary(summary, args.out)
    return 0
