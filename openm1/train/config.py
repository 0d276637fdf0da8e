"""The trainer's configuration: every field documented and validated once, with errors that name the
field. Defaults follow the paper's pretraining optimizer (AdamW 0.9 / 0.95 / 1e-15, lr 8e-5 -> 8e-6)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from openm1.train.schedules import DECAYS, ContextStages


@dataclass
class TrainConfig:
    """Pretraining and SFT share one trainer; they differ only in the data (see ``packing``)."""

    steps: int = 100
    """Optimizer steps."""
    lr: float = 8e-5
    """Peak learning rate (the paper: 8e-5), held after warmup until ``decay_start``."""
    min_lr: float = 8e-6
    """Learning rate at the end of the decay (the paper: 8e-6)."""
    warmup_steps: int = 0
    """Linear warmup steps from 0 to ``lr``."""
    decay_start: float = 0.5
    """Fraction of ``steps`` at which the decay begins (1.0: constant to the end)."""
    decay: str = "cosine"
    """Shape of the decay: ``cosine`` or ``linear``."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (not applied to norms)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas (the paper: 0.9, 0.95)."""
    eps: float = 1e-15
    """AdamW epsilon (the paper: 1e-15)."""
    seq_len: Any = 1024
    """Tokens per packed row: one length, or ``[[first_step, length], ...]`` to grow the context in stages."""
    grad_accum: int = 1
    """Packed rows per optimizer step (the loss is averaged over all their target tokens). Under
    torchrun these rows are split over the processes (a multiple of them), so a step is the same on
    any number of processes."""
    ep: int = 1
    """Under torchrun: experts split over this many processes (expert parallelism; it must divide the
    processes and the experts). Everything is FSDP2-sharded over all processes either way."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (0: off)."""
    aux_coef_start: float = 0.01
    """MoE load-balancing coefficient at step 0."""
    aux_coef_end: float = 0.001
    """... decreasing linearly to this at ``aux_decay_steps``."""
    aux_decay_steps: int | None = None
    """Steps over which the coefficient decreases (None: all of ``steps``)."""
    bf16: bool = True
    """bf16 autocast on CUDA (master weights stay float32); ignored on CPU."""
    activation_checkpointing: bool = False
    """Recompute each layer in the backward pass to save memory."""
    save_every: int = 0
    """Write a resumable checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """Resumable checkpoints kept (older ones are deleted)."""
    log_every: int = 1
    """Log a metrics line every N steps."""
    seed: int = 0
    """Seed of the data order (and of nothing else: the model arrives initialised)."""
    progress: bool = True
    """Show a progress bar."""
    plot: bool = True
    """Draw ``loss.png`` at the end (needs matplotlib)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TrainConfig:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        for name in ("steps", "grad_accum", "ep", "log_every", "keep_checkpoints"):
            v = getattr(self, name)
            need(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                f"{name} must be an integer >= 1, got {v!r}",
            )
        for name in ("warmup_steps", "save_every"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 0, f"{name} must be an integer >= 0, got {v!r}")
        need(self.lr > 0, f"lr must be positive, got {self.lr}")
        need(0 <= self.min_lr <= self.lr, f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        need(
            0.0 <= self.decay_start <= 1.0,
            f"decay_start is a fraction of steps in [0, 1], got {self.decay_start}",
        )
        need(self.decay in DECAYS, f"decay must be one of {DECAYS}, got {self.decay!r}")
        need(
            self.warmup_steps <= self.decay_start_step,
            f"warmup_steps ({self.warmup_steps}) must end before the decay starts "
            f"(step {self.decay_start_step})",
        )
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        need(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"betas must be two numbers in [0, 1), got {self.betas}",
        )
        need(self.eps > 0, f"eps must be positive, got {self.eps}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0 (0: off), got {self.max_grad_norm}")
        need(
            self.aux_coef_start >= 0 and self.aux_coef_end >= 0,
            "aux_coef_start and aux_coef_end must be >= 0",
        )
        need(
            self.aux_decay_steps is None or self.aux_decay_steps >= 0,
            f"aux_decay_steps must be >= 0 or None, got {self.aux_decay_steps}",
        )
        _ = self.context_stages  # validates seq_len
        return self

    @property
    def decay_start_step(self) -> int:
        return int(round(self.decay_start * self.steps))

    @property
    def context_stages(self) -> ContextStages:
        try:
            return ContextStages.of(self.seq_len)
        except (TypeError, ValueError) as e:
            raise ValueError(f"seq_len: {e} (give an integer or [[first_step, length], ...])") from None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "train") -> TrainConfig:
        """Build from a mapping (a TOML table); unknown keys are an error naming the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"[{where}] has unknown field(s) {unknown}; valid fields: {sorted(known)}")
        try:
            return cls(**d)
        except ValueError as e:
            raise ValueError(f"[{where}] {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


__all__ = ["TrainConfig"]
