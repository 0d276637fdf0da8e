"""Run under ``torchrun --nproc-per-node 2``: the two trainers themselves on CPU over gloo.

``trainer_worker.py OUT``: bad layouts raise on every rank; ``Trainer`` runs 5 steps with FSDP2 (ep 1)
and with EP 2 + FSDP2, saving a distributed checkpoint at step 3, and resumes ``OUT/from1`` (a
checkpoint one process wrote at step 3) to step 5; ``RLTrainer`` runs one step (ep 1 and 2) and saves
a checkpoint. Each rank writes ``OUT/rank{r}.pt`` for the test to compare with one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from openm1.distributed import MeshError, init_distributed
from openm1.train import Trainer
from tests.distributed.trainer_common import rl_run, train_config, train_data, train_model


def bad_layouts(out: Path) -> list[str]:
    """ep = 3 does not divide 2 processes; 3 rows per step cannot be split over 2 processes."""
    messages = []
    for kw in ({"ep": 3}, {"grad_accum": 3}):
        try:
            Trainer(train_model(), train_data(), train_config(**kw), out / "bad")
            messages.append("no error")
        except MeshError as e:
            messages.append(str(e))
    return messages


def main(out: Path) -> None:
    env = init_distributed(timeout_s=120)
    results: dict = {"mesh_errors": bad_layouts(out)}
    for name, ep in (("fsdp", 1), ("ep", 2)):
        trainer = Trainer(train_model(), train_data(), train_config(ep=ep), out / name)
        results[name] = trainer.train()
    results["from1"] = Trainer(train_model(), train_data(), train_config(), out / "from1").train(resume=True)
    results["rl"] = rl_run(out / "rl", save=True)
    results["rl_ep"] = rl_run(out / "rl_ep", ep=2)
    torch.save(results, out / f"rank{env.rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
