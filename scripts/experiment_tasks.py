"""Prompt files of a pipeline run's RL and held-out splits, for ``openm1 rl`` / ``openm1 experiment``.

``openm1 run`` writes ``data/rl.jsonl`` with the answers as text, which the logic verifier cannot use.
This rebuilds the same splits from the pipeline file (they are deterministic: the same families,
difficulty, sizes and seed draw the same puzzles) and writes, one task a line,
``{"prompt": ..., "answer": {"family": ..., "data": ...}, "family": ...}``, which ``[tasks] file = ...,
reward = "logic"`` reads: the prompts exactly as the pipeline's SFT, RL and evaluation show them, none
of them in the SFT or pretraining data.

    python scripts/experiment_tasks.py configs/experiment-sft-cpu.toml --out runs/experiment-sft/data

writes ``rl-tasks.jsonl`` and ``eval-tasks.jsonl`` into --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from openm1.config import atomic_write_text
from openm1.pipeline.config import PipelineConfig
from openm1.pipeline.tasks import build_splits, question


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", help="the pipeline file (openm1 run) that made the SFT model")
    ap.add_argument("--out", required=True, help="folder for rl-tasks.jsonl and eval-tasks.jsonl")
    args = ap.parse_args()
    cfg = PipelineConfig.load(args.config)
    t = cfg.task
    splits = build_splits(
        t.families,
        t.difficulty,
        n_eval=t.eval_size,
        n_rl=t.rl_size,
        n_sft=t.sft_size,
        n_pretrain=t.pretrain_size,
        seed=cfg.pipeline.seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, puzzles in (("rl-tasks.jsonl", splits.rl), ("eval-tasks.jsonl", splits.eval)):
        rows = [
            {"prompt": question(p), "answer": {"family": p.family, "data": p.data}, "family": p.family}
            for p in puzzles
        ]
        atomic_write_text(out / name, "".join(json.dumps(r) + "\n" for r in rows))
        print(f"{out / name}: {len(rows)} tasks")


if __name__ == "__main__":
    main()
