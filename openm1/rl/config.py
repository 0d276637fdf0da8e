"""``RLConfig``: every knob of an RL run, documented and validated once, loadable from TOML or YAML.

A config file may hold the fields at its top level or under an ``[rl]`` table (the ``openm1 rl``
command keeps ``[model]`` and ``[tasks]`` beside it). Unknown fields and bad values raise
:class:`RLConfigError` naming the field and what it accepts.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from openm1.rl.length import LengthSchedule
from openm1.rl.losses import ALGORITHMS


class RLConfigError(ValueError):
    """A config field that is unknown or out of range; the message names it and the allowed values."""


@dataclass
class RLConfig:
    """An RL run: rollouts, rewards, advantages, the policy loss, the optimiser, logging."""

    # --- the objective
    algo: str = "cispo"
    """Policy loss: cispo (the paper's), grpo, dapo, ppo, dr_grpo (see openm1.rl.losses)."""
    eps_low: float | None = None
    """Lower clip: ratio/weight floor 1 - eps_low. None: the algorithm's default (cispo: no floor)."""
    eps_high: float | None = None
    """Upper clip: ratio/weight cap 1 + eps_high. None: the algorithm's default (cispo 4.0, dapo 0.28)."""
    mask_trust_region: bool = False
    """cispo only: the paper's unified form, dropping tokens PPO's clip would drop."""
    kl_coef: float = 0.0
    """grpo/ppo only: weight of the k3 KL to the initial policy (a frozen copy is kept when > 0)."""
    tis_cap: float | None = None
    """Truncated importance sampling against the rollout log-probs with this cap (None: off)."""
    normalize_std: bool | None = None
    """Divide group advantages by the group's std. None: yes, except for dr_grpo."""
    dynamic_sampling: bool = False
    """DAPO's filter: drop groups whose rewards are all equal (no refill: the batch shrinks)."""
    overlong_cache: int = 0
    """DAPO's soft overlong penalty over the last this many tokens before the limit (0: off)."""

    # --- rollouts
    group_size: int = 8
    """Responses sampled per prompt (G)."""
    prompts_per_step: int = 8
    """Prompts per rollout batch; a step trains on prompts_per_step * group_size responses."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (the trained log-probs use the same)."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts (1: off)."""
    top_k: int = 0
    """Top-k sampling of the rollouts (0: off)."""
    length_stages: list[int] = field(default_factory=lambda: [256])
    """Maximum new tokens, in stages that grow when the run is stable (see openm1.rl.length)."""
    length_window: int = 5
    """Steps of evidence before the generation limit may grow."""
    length_max_truncation: float = 0.1
    """Grow the limit only while the windowed truncation rate is at most this."""
    length_reward_tolerance: float = 0.0
    """Grow the limit only while the windowed reward slope is at least minus this."""
    repetition_window: int | None = 3000
    """Early truncation: stop a response after this many consecutive tokens with p > threshold."""
    repetition_threshold: float = 0.99
    """Early truncation: the probability above which a token counts as confident."""
    chat: bool = True
    """Wrap each task's prompt in the tokenizer's chat template (one user message)."""
    cuda_graph: bool = False
    """openm1 models on CUDA: replay the rollout engine's decode step as a CUDA graph."""
    reward_timeout_s: float = 30.0
    """A reward that has not answered after this many seconds scores 0 (reported)."""

    # --- optimisation
    steps: int = 100
    """Rollout batches (trainer steps) to run."""
    lr: float = 1e-5
    """AdamW learning rate (constant after warmup)."""
    warmup_steps: int = 0
    """Linear learning-rate warmup over this many optimiser updates."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas (the paper's)."""
    adam_eps: float = 1e-15
    """AdamW epsilon (the paper's; larger values damp the update of rarely-seen parameters)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping; the norm is logged either way)."""
    minibatches: int = 1
    """Optimiser updates per pass over a rollout batch (the paper: 16 per batch in all)."""
    epochs: int = 1
    """Passes over each rollout batch; updates per step = minibatches * epochs."""
    recompute_old_logp: bool = True
    """Recompute the sampling policy's log-probs with the trainer (the paper); False uses the rollout's
    (one forward fewer when there are several updates per batch; the log-prob gap is then not measured)."""
    share_prompt: bool = True
    """openm1 models: run each distinct prompt once per forward and its G responses on a copy of its
    cache (same numbers as the padded forward; much less work when prompts are long)."""
    minibatch_by_group: bool = True
    """Minibatches of whole groups (a prompt and its G responses) when there are at least as many
    groups as minibatches; random rows otherwise."""
    micro_batch: int = 0
    """Rows per forward/backward inside a minibatch (gradient accumulation; 0: the whole minibatch).
    Under torchrun each process takes its share of every minibatch, then cuts it by this."""
    ep: int = 1
    """Under torchrun: experts split over this many processes (expert parallelism; it must divide the
    processes and the experts). The policy is FSDP2-sharded over all processes either way."""

    # --- evaluation, logging, checkpoints
    eval_every: int = 0
    """Greedy evaluation on the held-out tasks every this many steps (0: only at the end)."""
    eval_max_new_tokens: int | None = None
    """Generation limit of the evaluation (None: the current stage's)."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every this many steps (0: only at the end)."""
    plots: bool = True
    """Write PNG plots of the metrics at the end (needs matplotlib)."""
    tensorboard: bool | None = None
    """TensorBoard logging: True requires it, None uses it when installed, False skips it."""
    progress: bool = True
    """Show a progress bar."""
    seed: int = 0
    """Seeds task sampling, rollouts and minibatch order (a run is a function of it)."""

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.length_stages = list(self.length_stages)
        self.validate()

    # ------------------------------------------------------------------ derived
    @property
    def updates_per_step(self) -> int:
        return self.minibatches * self.epochs

    @property
    def std_normalized(self) -> bool:
        return self.algo != "dr_grpo" if self.normalize_std is None else self.normalize_std

    def length_schedule(self) -> LengthSchedule:
        return LengthSchedule(
            list(self.length_stages),
            self.length_window,
            self.length_max_truncation,
            self.length_reward_tolerance,
        )

    def loss_options(self) -> dict[str, Any]:
        """The ``policy_loss`` options this config sets (algorithm defaults stay in losses.py)."""
        opts: dict[str, Any] = {}
        if self.eps_low is not None:
            opts["eps_low"] = self.eps_low
        if self.eps_high is not None:
            opts["eps_high"] = self.eps_high
        if self.algo == "cispo" and self.mask_trust_region:
            opts["mask_trust_region"] = True
        if self.tis_cap is not None:
            opts["tis_cap"] = self.tis_cap
        return opts

    # ------------------------------------------------------------------ validation
    def validate(self) -> RLConfig:
        errors: list[str] = []

        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                errors.append(f"{name}: {msg}, got {getattr(self, name)!r}")

        def pos_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            need(
                isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
                name,
                f"an integer >= {minimum}",
            )

        def number(name: str, lo: float, hi: float = math.inf, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
            need(ok, name, f"a number in [{lo}, {hi}]" + (" or None" if allow_none else ""))

        need(self.algo in ALGORITHMS, "algo", f"one of {', '.join(ALGORITHMS)}")
        number("eps_low", 0.0, allow_none=True)
        number("eps_high", 0.0, allow_none=True)
        if self.algo != "cispo":
            need(not self.mask_trust_region, "mask_trust_region", "only for algo = 'cispo'")
        number("kl_coef", 0.0)
        if self.kl_coef and self.algo not in ("grpo", "ppo"):
            errors.append(f"kl_coef: only grpo and ppo take a KL term, but algo is {self.algo!r}")
        number("tis_cap", 1e-12, allow_none=True)
        if self.tis_cap is not None and self.temperature != 1.0:
            errors.append(
                "tis_cap: the rollout log-probs are the model's at temperature 1; use temperature = 1.0 "
                f"with truncated importance sampling (temperature is {self.temperature})"
            )
        pos_int("group_size", 2 if self._std_on() else 1)
        pos_int("prompts_per_step")
        number("temperature", 1e-6, 100.0)
        number("top_p", 1e-6, 1.0)
        pos_int("top_k", 0)
        try:
            LengthSchedule(
                list(self.length_stages),
                self.length_window,
                self.length_max_truncation,
                self.length_reward_tolerance,
            )
        except (ValueError, TypeError) as e:
            errors.append(f"length_stages/length_window/length_max_truncation/length_reward_tolerance: {e}")
        if self.repetition_window is not None:
            pos_int("repetition_window")
        number("repetition_threshold", 1e-9, 1 - 1e-9)
        number("reward_timeout_s", 1e-3)
        pos_int("overlong_cache", 0)
        if (
            isinstance(self.overlong_cache, int)
            and self.length_stages
            and all(isinstance(s, int) for s in self.length_stages)
        ):
            need(
                self.overlong_cache <= min(self.length_stages),
                "overlong_cache",
                "at most the first length stage",
            )
        pos_int("steps")
        number("lr", 0.0, 1.0)
        pos_int("warmup_steps", 0)
        need(
            isinstance(self.betas, tuple)
            and len(self.betas) == 2
            and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas),
            "betas",
            "two numbers in [0, 1)",
        )
        number("adam_eps", 0.0, 1.0)
        number("weight_decay", 0.0, 1.0)
        number("grad_clip", 0.0)
        pos_int("minibatches")
        pos_int("epochs")
        pos_int("micro_batch", 0)
        pos_int("ep")
        pos_int("eval_every", 0)
        if self.eval_max_new_tokens is not None:
            pos_int("eval_max_new_tokens")
        pos_int("checkpoint_every", 0)
        pos_int("seed", 0)
        for name in (
            "mask_trust_region",
            "dynamic_sampling",
            "recompute_old_logp",
            "cuda_graph",
            "share_prompt",
            "minibatch_by_group",
            "chat",
            "plots",
            "progress",
        ):
            need(isinstance(getattr(self, name), bool), name, "true or false")
        need(
            self.normalize_std is None or isinstance(self.normalize_std, bool),
            "normalize_std",
            "true, false or unset",
        )
        need(
            self.tensorboard is None or isinstance(self.tensorboard, bool),
            "tensorboard",
            "true, false or unset",
        )
        if (
            isinstance(self.minibatches, int)
            and isinstance(self.prompts_per_step, int)
            and isinstance(self.group_size, int)
            and self.minibatches > self.prompts_per_step * self.group_size
        ):
            errors.append(
                f"minibatches: {self.minibatches} minibatches cannot split a rollout batch of "
                f"{self.prompts_per_step * self.group_size} responses; lower it or raise prompts_per_step"
            )
        if errors:
            raise RLConfigError("invalid RL config:\n  " + "\n  ".join(errors))
        return self

    def _std_on(self) -> bool:
        """Whether std normalisation is on, tolerating a bad ``algo`` (validation reports that)."""
        return self.normalize_std if isinstance(self.normalize_std, bool) else self.algo != "dr_grpo"

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RLConfig:
        """Build from a mapping; unknown keys raise, listing the valid ones."""
        if not isinstance(d, dict):
            raise RLConfigError(f"an RL config must be a table of fields, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise RLConfigError(f"unknown RL config field(s) {unknown}; valid fields: {', '.join(names)}")
        try:
            return cls(**d)
        except TypeError as e:  # a wrongly typed value that broke a comparison before validation
            raise RLConfigError(f"invalid RL config: {e}") from e

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> RLConfig:
        """From a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file: its ``[rl]`` table, or its top level."""
        data = load_config_file(path)
        return cls.from_dict(data.get("rl", data) if "rl" in data else data)

    @staticmethod
    def field_docs() -> dict[str, str]:
        """Each field's documentation, from the attribute docstrings in this file."""
        return _field_docs()


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML or YAML file as a dict (errors name the file and the fix)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise RLConfigError(f"{path} is not valid TOML: {e}") from e
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise RLConfigError(f"reading {path} needs pyyaml (pip install pyyaml), or use TOML") from e
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RLConfigError(f"{path} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise RLConfigError(f"{path} must hold a mapping of fields at its top level")
        return data
    raise RLConfigError(f"config file {path} must end in .toml, .yaml or .yml")


def _field_docs() -> dict[str, str]:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(RLConfig))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value.strip()
    return docs
