"""The pretraining / SFT trainer: next-token loss on packed rows, the paper's AdamW, schedules for the
learning rate, the MoE balance coefficient and the context length, gradient accumulation, clipping,
bf16 autocast on CUDA, optional activation checkpointing, resumable checkpoints, metrics, progress.

The loss of a step is the sum of the token losses of its ``grad_accum`` rows divided by the number of
target tokens in all of them, so accumulating rows gives the same gradient as one big batch.

Under torchrun (``torch.distributed`` initialised, or ``WORLD_SIZE > 1``) the model is FSDP2-sharded
(experts split over ``ep`` processes), every rank packs the step's ``grad_accum`` rows (cheap, and it
keeps the data position identical everywhere) and trains on its contiguous share of them; each rank's
loss is divided by the target count of all the rows and multiplied by the world size, since FSDP
averages gradients over ranks: the update equals one process's on the same rows. Metrics, progress and
plots come from rank 0; checkpoints are distributed (DCP) and resume on any number of processes; the
final model is written whole by rank 0.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from openm1.distributed.env import DistEnv, MeshError, barrier, maybe_init_distributed
from openm1.metrics import MetricsWriter, plot_metrics, read_metrics
from openm1.train.config import TrainConfig
from openm1.train.memory import enable_activation_checkpointing
from openm1.train.packing import IGNORE, Example, PackedBatch, PackedLoader
from openm1.train.schedules import LinearSchedule, LRSchedule
from openm1.train.state import (
    STATE_NAME,
    is_sharded_checkpoint,
    jsonable_rng_state,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    save_sharded_checkpoint,
    set_jsonable_rng_state,
    set_rng_state,
)

PLOT_KEYS = ("loss", "lr", "aux_coef", "router_loss", "grad_norm", "tokens_per_s")


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the paper's betas and epsilon; no weight decay on norms (1-D weights)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def packed_loss(
    model: torch.nn.Module, batch: PackedBatch, autocast: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the token losses of one packed row, its router loss)."""
    with autocast or nullcontext():
        out = model(batch.input_ids, cu_seqlens=batch.cu_seqlens)
    logits = out.logits[0].float()
    ce = F.cross_entropy(logits, batch.labels[0], ignore_index=IGNORE, reduction="sum")
    return ce, out.router_loss.float()


class Trainer:
    """``Trainer(model, examples, config, out_dir).train()`` -> per-step metric dicts.

    ``out_dir`` receives ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/`` (resumable),
    ``final/`` (the trained model) and ``loss.png``."""

    def __init__(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        config: TrainConfig,
        out_dir: str | os.PathLike,
        *,
        name: str = "train",
        on_step: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> None:
        self.model = model
        self.config = config.validate()
        self.out_dir = Path(out_dir)
        self.name = name
        self.on_step = on_step
        self.dist = maybe_init_distributed()
        if self.dist is not None:
            shard_model(model, self.dist, config)
        self.device = next(model.parameters()).device
        self.loader = PackedLoader(examples, seed=config.seed)
        max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if max_pos is not None and config.context_stages.max_len > max_pos:
            raise ValueError(
                f"seq_len {config.context_stages.max_len} exceeds the model's max_position_embeddings "
                f"{max_pos}; "
                "lower seq_len or use a larger preset"
            )
        self.optimizer = make_optimizer(model, config)
        self.lr = LRSchedule(
            config.lr, config.min_lr, config.steps, config.warmup_steps, config.decay_start_step, config.decay
        )
        aux_steps = config.steps if config.aux_decay_steps is None else config.aux_decay_steps
        self.aux_coef = LinearSchedule(config.aux_coef_start, config.aux_coef_end, aux_steps)
        self.stages = config.context_stages
        self.step = 0
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if config.bf16 and self.device.type == "cuda" and self.dist is None  # FSDP casts itself
            else None
        )
        if config.activation_checkpointing and self.dist is None:  # sharded: parallelize did it
            enable_activation_checkpointing(model)

    @property
    def is_main(self) -> bool:
        """Whether this process writes metrics, plots and the final model (rank 0, or alone)."""
        return self.dist is None or self.dist.is_main

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def save(self) -> Path:
        if self.dist is not None:
            state = {
                "step": self.step,
                "data": self.loader.state_dict(),
                "rng": jsonable_rng_state(),
                "config": self.config.to_dict(),
            }
            keep = self.config.keep_checkpoints
            return save_sharded_checkpoint(
                self.checkpoint_dir, self.step, self.model, self.optimizer, state, keep
            )
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "data": self.loader.state_dict(),
            "rng": rng_state(),
            "config": self.config.to_dict(),
        }
        return save_checkpoint(
            self.checkpoint_dir, self.step, self.model, state, self.config.keep_checkpoints
        )

    def resume(self) -> bool:
        """Continue from ``out_dir/checkpoints/latest`` if there is one; returns whether it resumed."""
        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            return False
        if is_sharded_checkpoint(path):  # written under torchrun, on any number of processes
            from openm1.distributed.checkpoint import load_distributed

            state = load_distributed(path, self.model, self.optimizer)
            set_jsonable_rng_state(state["rng"])
        elif self.dist is not None:  # written by one process, continued by several
            from openm1.distributed.checkpoint import load_full_optimizer, load_full_pretrained

            state = torch.load(path / STATE_NAME, map_location="cpu", weights_only=False)
            load_full_pretrained(self.model, path)
            load_full_optimizer(self.model, self.optimizer, state["optimizer"], _param_groups(self.model))
            set_rng_state(state["rng"])
        else:
            state = load_checkpoint(path, self.model)
            self.optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"])
        self.loader.load_state_dict(state["data"])
        self.step = int(state["step"])
        return True

    # ------------------------------------------------------------------ training
    def accumulate(
        self, rows: Sequence[PackedBatch], coef: float, step_rows: Sequence[PackedBatch] | None = None
    ) -> tuple[float, float]:
        """Backward over ``rows`` as one batch: token losses summed and divided by all rows' target
        count, the router loss averaged over rows. Returns (summed token loss, mean router loss).

        Under torchrun ``rows`` is this rank's share of ``step_rows`` (the step's rows on all ranks):
        the denominators are those of ``step_rows`` and the loss is multiplied by the world size, since
        FSDP averages the ranks' gradients; only the last row synchronises gradients. The sums returned
        are this rank's."""
        every = rows if step_rows is None else step_rows
        targets = max(1, sum(r.num_targets for r in every))
        scale = 1 if self.dist is None else self.dist.world_size
        total_ce, total_router = 0.0, 0.0
        for i, row in enumerate(rows):
            if self.dist is not None:
                self.model.set_requires_gradient_sync(i == len(rows) - 1)
            ce, router = packed_loss(self.model, row, self.autocast)
            loss = ce / targets + coef * router / len(every)
            (loss * scale if scale != 1 else loss).backward()
            total_ce += float(ce.detach())
            total_router += float(router.detach()) / len(every)
        return total_ce, total_router

    def my_rows(self, rows: list[PackedBatch]) -> list[PackedBatch]:
        """This rank's contiguous share of the step's rows (all of them in one process)."""
        if self.dist is None:
            return rows
        per = len(rows) // self.dist.world_size
        return rows[self.dist.rank * per : (self.dist.rank + 1) * per]

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over ``grad_accum`` packed rows; the step is skipped (weights untouched)
        and reported when the loss or the gradient is not finite."""
        cfg, model = self.config, self.model
        model.train()
        t0 = time.perf_counter()
        seq_len = self.stages(self.step)
        rows = [self.loader.next_row(seq_len).to(self.device) for _ in range(cfg.grad_accum)]
        targets = max(1, sum(r.num_targets for r in rows))
        coef = self.aux_coef(self.step)
        lr = self.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.dist is None:
            total_ce, total_router = self.accumulate(rows, coef)
            params = [p for p in model.parameters() if p.grad is not None]
            if cfg.max_grad_norm > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            else:
                grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        else:
            total_ce, total_router, grad_norm = self._sharded_backward(rows, coef)
        skipped = not (math.isfinite(total_ce) and math.isfinite(grad_norm))
        if not skipped:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        tokens = sum(r.num_tokens for r in rows)
        dt = time.perf_counter() - t0
        return {
            "loss": total_ce / targets,
            "router_loss": total_router,
            "aux_coef": coef,
            "lr": lr,
            "grad_norm": grad_norm,
            "seq_len": seq_len,
            "tokens": tokens,
            "target_tokens": targets,
            "tokens_per_s": tokens / dt if dt > 0 else 0.0,
            "epoch": self.loader.epoch,
            "skipped": int(skipped),
        }

    def _sharded_backward(self, rows: list[PackedBatch], coef: float) -> tuple[float, float, float]:
        """This rank's rows forward and backward, the sums over all ranks, the clipped global norm."""
        from openm1.distributed.grad import clip_grad_norm_

        ce, router = self.accumulate(self.my_rows(rows), coef, step_rows=rows)
        sums = torch.tensor([ce, router], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(sums)
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else math.inf
        grad_norm = float(clip_grad_norm_(self.model, max_norm))
        return float(sums[0]), float(sums[1]), grad_norm

    def train(self, resume: bool = False) -> list[dict[str, Any]]:
        """Run to ``config.steps``; with ``resume``, first continue from the latest checkpoint."""
        cfg = self.config
        if resume:
            self.resume()
        main = self.is_main
        writer = MetricsWriter(self.out_dir, resume_step=self.step if resume else None) if main else None
        history: list[dict[str, Any]] = []
        t_start = time.perf_counter()
        try:
            with _progress(cfg.progress and main, f"{self.name}", cfg.steps, self.step) as advance:
                while self.step < cfg.steps:
                    metrics = self.train_step()
                    history.append({"step": self.step, **metrics})
                    if metrics["skipped"] and main:
                        print(f"{self.name} step {self.step}: non-finite loss or gradient, step skipped")
                    if writer is not None and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                        writer.log(self.step, metrics)
                    if self.on_step is not None and main:
                        self.on_step(self.step, metrics)
                    advance(f"loss {metrics['loss']:.3f}  {metrics['tokens_per_s']:,.0f} tok/s")
                    if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                        self.save()
        finally:
            if writer is not None:
                writer.close()
        self.save()
        if self.dist is None:
            self.model.save_pretrained(self.out_dir / "final")
        else:
            from openm1.distributed.checkpoint import save_full_pretrained

            save_full_pretrained(self.model, self.out_dir / "final")
        self.elapsed_s = time.perf_counter() - t_start
        if main:
            plot_metrics(
                read_metrics(self.out_dir), PLOT_KEYS, self.out_dir / "loss.png", title=self.name, smooth=5
            )
        barrier()
        return history


def _param_groups(model: torch.nn.Module) -> list[list[str]]:
    """The parameter names of :func:`make_optimizer`'s groups, in its order (decay, then no decay)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(name)
    return [decay, no_decay]


def shard_model(model: torch.nn.Module, env: DistEnv, config: TrainConfig) -> torch.nn.Module:
    """FSDP2 over all ranks, experts split over ``config.ep`` of them, on this rank's device; checked
    first, identically on every rank, so a bad layout is the same clear error everywhere. A model
    already sharded is used as it is."""
    from openm1.distributed import build_mesh, parallelize
    from openm1.distributed.fsdp import is_parallelized

    if config.grad_accum % env.world_size:
        raise MeshError(
            f"grad_accum = {config.grad_accum} rows per step cannot be split over {env.world_size} "
            f"processes: make it a multiple of {env.world_size} (each process trains "
            "grad_accum / processes rows of every step)"
        )
    if is_parallelized(model):
        return model
    meshes = build_mesh(env.world_size, model.config.num_local_experts, ep=config.ep)
    model.to(env.device)
    mp = None
    if env.device.type == "cuda" and not config.bf16:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        mp = MixedPrecisionPolicy()  # float32 compute, as bf16 = false asks
    return parallelize(model, meshes, mp_policy=mp, activation_checkpointing=config.activation_checkpointing)


class _progress:
    """A rich progress bar with a free text field (tokens/s), or nothing."""

    def __init__(self, enabled: bool, name: str, total: int, done: int) -> None:
        self.enabled, self.name, self.total, self.done = enabled, name, total, done

    def __enter__(self) -> Callable[[str], None]:
        if not self.enabled:
            return lambda info: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=False,
        )
        self.bar.__enter__()
        task = self.bar.add_task(self.name, total=self.total, completed=self.done, info="")
        return lambda info: self.bar.update(task, advance=1, info=info)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
