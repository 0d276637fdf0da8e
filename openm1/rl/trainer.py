"""``RLTrainer``: rollouts, rewards, group advantages, several policy updates per rollout batch.

One step: draw ``prompts_per_step`` tasks (a pure function of ``(seed, step)``), sample
``group_size`` responses each (openm1 models through the generation engine, others through
transformers' ``generate``), score them (a reward that raises or hangs scores 0 and is counted),
shape (overlong penalty) and normalise the rewards within each group, optionally drop groups with no
signal (DAPO's dynamic sampling), recompute the old log-probs with the policy (the FP32 LM head, the
same function as the rollout's), then ``minibatches * epochs`` AdamW updates of ``policy_loss(algo)``.
A non-finite loss or gradient skips that update without touching weights or optimiser state, and is
reported. Metrics go to ``metrics.jsonl`` and TensorBoard, plots to ``plots/`` at the end; checkpoints
(``checkpoint/``: weights, optimiser, RNG, step, length stage) are written atomically and a new
trainer on the same ``out_dir`` resumes from them.

Under torchrun (``torch.distributed`` initialised, or ``WORLD_SIZE > 1``; openm1 models only) the
policy is FSDP2-sharded (experts split over ``ep`` processes) and every rank keeps an unsharded copy
for its rollout engine, refreshed after each step's updates. Each rank generates and scores its
contiguous share of the prompts (sample ``i`` of the batch draws from the same seed as in one process),
then the scored rollouts (token ids and numbers) are gathered, so every rank holds the step's whole
batch: advantages, dynamic sampling and the minibatch order are those of one process. Each minibatch
is split over the ranks; the loss keeps the whole minibatch's normaliser (CISPO's global token count)
and is multiplied by the world size, since FSDP averages gradients. The update therefore equals one
process's on the same rollouts. Metrics, progress, plots and the held-out evaluation come from rank 0;
checkpoints are distributed (DCP) and resume on any number of processes.
"""

from __future__ import annotations

import copy
import math
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from openm1.distributed.env import DistEnv, maybe_init_distributed
from openm1.generate.sampling import SamplingParams
from openm1.metrics import MetricsWriter, plot_metrics
from openm1.rl.advantages import dynamic_sampling, group_advantages, overlong_penalty
from openm1.rl.config import RLConfig
from openm1.rl.curriculum import Task
from openm1.rl.logprobs import token_logprobs
from openm1.rl.losses import policy_loss
from openm1.rl.rollout import PaddedRollout, Rollout, is_openm1_model, make_engine, rollout, score_rollout

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.pt"
#: The metrics plotted at the end of a run (those present).
PLOTTED = (
    "reward/mean",
    "accuracy",
    "eval/accuracy",
    "response_length/mean",
    "truncation_rate",
    "entropy",
    "clip_frac",
    "is_weight/max",
    "logp_gap/abs_mean",
    "grad_norm",
    "max_new_tokens",
    "tokens_per_s",
)


class RLTrainer:
    """Train ``model`` with RL on ``tasks`` (a Curriculum, a TaskSource, or a list of Task).

    ``train()`` runs ``config.steps`` steps (resuming from ``out_dir/checkpoint`` when there is one)
    and returns the per-step metric dicts; ``evaluate(tasks)`` scores greedy answers.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        tasks: Any,
        config: RLConfig,
        out_dir: str | os.PathLike,
        eval_tasks: Sequence[Task] | None = None,
    ) -> None:
        if not isinstance(config, RLConfig):
            raise TypeError(f"config must be an RLConfig, got {type(config).__name__}")
        config.validate()
        _check_tasks(tasks)
        self.model, self.tokenizer, self.tasks, self.config = model, tokenizer, tasks, config
        self.out_dir = Path(out_dir)
        self.eval_tasks = list(eval_tasks) if eval_tasks else []
        self.openm1 = is_openm1_model(model)
        self.dist: DistEnv | None = maybe_init_distributed()
        self.ref_model = copy.deepcopy(model).eval().requires_grad_(False) if config.kl_coef > 0 else None
        self.rollout_model = model
        if self.dist is not None:
            self.rollout_model = _shard_policy(model, self.dist, config)
            if self.ref_model is not None:
                self.ref_model.to(self.dist.device)
        self.device = next(model.parameters()).device
        self.pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=config.lr,
            betas=config.betas,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
        self.length = config.length_schedule()
        self.step = 0
        self.updates = 0
        self.history: list[dict[str, Any]] = []
        self.engine = None

    # ------------------------------------------------------------------ the loop
    def train(self) -> list[dict[str, Any]]:
        """Run (or finish) the configured steps; returns every step's metrics, resumed ones included."""
        resumed = self.load_checkpoint()
        cfg = self.config
        main = self.is_main
        writer = None
        if main:
            resume_step = self.step if resumed else None
            writer = MetricsWriter(self.out_dir, tensorboard=cfg.tensorboard, resume_step=resume_step)
        try:
            with _progress(cfg.progress and main, cfg.steps, self.step) as advance:
                while self.step < cfg.steps:
                    metrics = self.train_step()
                    last = self.step == cfg.steps
                    due = (cfg.eval_every and self.step % cfg.eval_every == 0) or last
                    if self.eval_tasks and due and main:  # rank 0 evaluates, on its unsharded copy
                        metrics |= {f"eval/{k}": v for k, v in self.evaluate().items()}
                    record = writer.log(self.step, metrics) if writer else {"step": self.step, **metrics}
                    self.history.append(record)
                    if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or last:
                        self.save_checkpoint()
                    advance(_summary(metrics))
        finally:
            if writer is not None:
                writer.close()
        if cfg.plots and self.history and main:
            plot_metrics(self.history, PLOTTED, self.out_dir / "plots" / "rl.png", smooth=5, title="RL")
        return self.history

    @property
    def is_main(self) -> bool:
        """Whether this process writes metrics, plots and evaluates (rank 0, or alone)."""
        return self.dist is None or self.dist.is_main

    def train_step(self) -> dict[str, Any]:
        """One rollout batch and its updates; returns the step's metrics (and advances ``step``)."""
        cfg = self.config
        t0 = time.perf_counter()
        tasks = self.tasks_for(self.step)
        max_new = self.length.current
        ro, t_rollout, t_reward = self._generate_and_score(tasks, max_new)

        rewards = ro.rewards
        lengths = ro.lengths
        metrics: dict[str, Any] = _rollout_metrics(ro, max_new)
        metrics["tokens_per_s"] = float(lengths.sum()) / max(t_rollout, 1e-9)
        if cfg.overlong_cache:
            rewards = rewards + overlong_penalty(lengths, max_new, cfg.overlong_cache)
            metrics["reward/shaped_mean"] = float(rewards.mean())
        adv = group_advantages(rewards, cfg.group_size, normalize_std=cfg.std_normalized)
        keep = torch.ones(len(ro), dtype=torch.bool)
        if cfg.dynamic_sampling:
            filt = dynamic_sampling(rewards, cfg.group_size)
            keep = filt.keep_samples
            metrics["groups_dropped"] = filt.dropped
        t1 = time.perf_counter()
        if bool(keep.any()):
            batch = ro.select(keep)
            metrics |= self._update(batch, adv[keep], max_new)
        else:
            metrics["update_skipped"] = "no group with a learning signal (all rewards equal)"
        t_update = time.perf_counter() - t1
        self.step += 1
        advanced = self.length.update(metrics["truncation_rate"], metrics["reward/mean"])
        metrics |= {
            "max_new_tokens": max_new,
            "length_stage_advanced": advanced,
            "rollout_s": t_rollout,
            "reward_s": t_reward,
            "update_s": t_update,
            "step_s": time.perf_counter() - t0,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        return metrics

    # ------------------------------------------------------------------ pieces
    def tasks_for(self, step: int) -> list[Task]:
        """The tasks of ``step``: a pure function of ``(seed, step)``, so a resumed run sees the same."""
        n = self.config.prompts_per_step
        src = self.tasks
        if hasattr(src, "batch"):
            return list(src.batch(step, n))
        rng = random.Random(f"rl-tasks:{self.config.seed}:{step}")
        if hasattr(src, "sample"):
            return [src.sample(rng) for _ in range(n)]
        items = list(src)
        return rng.sample(items, n) if n <= len(items) else [rng.choice(items) for _ in range(n)]

    def evaluate(
        self, tasks: Sequence[Task] | None = None, max_new_tokens: int | None = None
    ) -> dict[str, float]:
        """Greedy answers to ``tasks`` (default: the held-out ones): accuracy (score >= 1), mean reward,
        mean response length, truncation rate."""
        tasks = list(self.eval_tasks if tasks is None else tasks)
        if not tasks:
            raise ValueError("evaluate needs tasks: pass them, or give eval_tasks to the trainer")
        limit = max_new_tokens or self.config.eval_max_new_tokens or self.length.current
        params = replace(self._sampling(limit), temperature=0.0, top_p=1.0, top_k=0)
        ro = self._rollout([t.prompt for t in tasks], 1, params, seed=0)
        score_rollout(ro, tasks, timeout_s=self.config.reward_timeout_s)
        return {
            "accuracy": float((ro.rewards >= 1.0).float().mean()),
            "mean_reward": float(ro.rewards.mean()),
            "mean_length": float(ro.lengths.float().mean()),
            "truncation_rate": float(ro.truncated.float().mean()),
        }

    def _generate_and_score(self, tasks: list[Task], max_new: int) -> tuple[Rollout, float, float]:
        """The step's scored rollouts and the seconds spent sampling and scoring. Under torchrun each
        rank samples and scores its share of the prompts and every rank receives the whole batch."""
        cfg, t0 = self.config, time.perf_counter()
        lo, hi = _share(len(tasks), self.dist)
        mine = tasks[lo:hi]
        ro = None
        if mine:
            prompts, params = [t.prompt for t in mine], self._sampling(max_new)
            seed, first = self._seed("rollout"), lo * cfg.group_size
            ro = self._rollout(prompts, cfg.group_size, params, seed, first_sample=first)
        t_rollout = time.perf_counter() - t0
        if ro is not None:
            score_rollout(ro, mine, timeout_s=cfg.reward_timeout_s)
        t_reward = time.perf_counter() - t0 - t_rollout
        if self.dist is not None:
            ro = _gather_rollouts(ro)
        return ro, t_rollout, t_reward

    def _sampling(self, max_new: int) -> SamplingParams:
        cfg = self.config
        return SamplingParams(
            max_new_tokens=max_new,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            repetition_window=cfg.repetition_window,
            repetition_threshold=cfg.repetition_threshold,
        )

    def _seed(self, what: str) -> int:
        return random.Random(f"rl-{what}:{self.config.seed}:{self.step}").getrandbits(48)

    def _rollout(
        self, prompts: list[str], group: int, params: SamplingParams, seed: int, first_sample: int = 0
    ) -> Rollout:
        engine = None
        model = self.rollout_model
        if self.openm1:
            from openm1.rl.rollout import encode_prompts

            longest = max(len(p) for p in encode_prompts(self.tokenizer, prompts, self.config.chat))
            need = longest + max(params.max_new_tokens, self.length.stages[-1])
            world = 1 if self.dist is None else self.dist.world_size
            rows = math.ceil(self.config.prompts_per_step / world) * self.config.group_size
            if self.engine is None or self.engine.max_len < need:
                self.engine = make_engine(
                    model,
                    self.tokenizer,
                    rows,
                    64 * math.ceil(need / 64),
                    cuda_graph=self.config.cuda_graph,
                )
            engine = self.engine
        was_training = model.training
        try:
            kw = {"first_sample": first_sample} if first_sample else {}
            return rollout(
                model,
                self.tokenizer,
                prompts,
                group,
                params,
                seed=seed,
                chat=self.config.chat,
                engine=engine,
                **kw,
            )
        finally:
            model.train(was_training)

    def _logprobs(
        self, model: torch.nn.Module, b: PaddedRollout, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token log-probs of the response tokens under ``model`` (float32), as the rollout's."""
        if self.openm1 and self.config.share_prompt and b.prompt_index is not None:
            return shared_prompt_logprobs(model, b, self.config.temperature, with_entropy)
        T = b.response_mask.shape[1]
        kwargs: dict[str, Any] = {"attention_mask": b.attention_mask, "logits_to_keep": T + 1}
        if not self.openm1:  # transformers counts positions from the cache, not the padding
            kwargs["position_ids"] = (b.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = model(b.input_ids, **kwargs).logits[:, :-1]
        return token_logprobs(logits, b.response_ids, self.config.temperature, with_entropy=with_entropy)

    @torch.no_grad()
    def _no_grad_logprobs(self, model: torch.nn.Module, full: PaddedRollout) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            if self.dist is None:
                n = len(full.input_ids)
                return torch.cat([self._logprobs(model, full[sl])[0] for sl in self._chunks(n)])
            return self._sharded_no_grad_logprobs(model, full)
        finally:
            model.train(was_training)

    def _sharded_no_grad_logprobs(self, model: torch.nn.Module, full: PaddedRollout) -> torch.Tensor:
        """Each rank computes its share of the rows, every rank receives all of them."""
        from openm1.distributed.rl import gather_rows

        rows = torch.arange(len(full.input_ids), device=self.device)
        parts = [self._logprobs(model, full[pos])[0] for pos, real in self._rank_chunks(rows) if real]
        local = torch.cat(parts) if parts else full.rollout_logp[:0]
        return gather_rows(local)[0]

    def _chunks(self, n: int) -> list[slice]:
        size = self.config.micro_batch or n
        return [slice(a, min(a + size, n)) for a in range(0, n, size)]

    def _rank_chunks(self, rows: torch.Tensor) -> list[tuple[torch.Tensor, bool]]:
        """This rank's positions in ``rows`` (its contiguous share), cut into micro-batches, and
        whether each is real. Every rank gets the same number of micro-batches, since each forward
        and backward of the sharded policy is collective: a rank short of rows runs a dummy one (the
        first row, weighted 0)."""
        world, rank = self.dist.world_size, self.dist.rank
        positions = torch.arange(len(rows), device=rows.device)
        share = math.ceil(len(rows) / world)
        size = self.config.micro_batch or share
        mine = positions.tensor_split(world)[rank]
        out = []
        for k in range(math.ceil(share / size)):
            part = mine[k * size : (k + 1) * size]
            out.append((part, True) if len(part) else (positions[:1], False))
        return out

    def _update(self, ro: Rollout, adv: torch.Tensor, max_new: int) -> dict[str, Any]:
        cfg = self.config
        model = self.model
        full = ro.padded(self.pad_id, self.device)
        adv = adv.to(self.device)
        n = len(ro)
        mask = full.response_mask
        # old log-probs of the policy that sampled (and the reference's), before any update. With one
        # update per batch the update's own forward gives them (detached): no extra pass.
        old_logp = ref_logp = None
        out: dict[str, Any] = {}
        if not cfg.recompute_old_logp:
            old_logp = full.rollout_logp
        elif cfg.updates_per_step > 1:
            old_logp = self._no_grad_logprobs(model, full)
            out = _gap_metrics(old_logp, full.rollout_logp, mask)
        if self.ref_model is not None:
            ref_logp = self._no_grad_logprobs(self.ref_model, full)
        model.train()
        gen = torch.Generator().manual_seed(self._seed("minibatch"))
        per_update: list[dict[str, float]] = []
        skipped, t0, trained_tokens = 0, time.perf_counter(), 0
        for _ in range(cfg.epochs):
            for mb in self._minibatches(n, gen):
                if len(mb) == 0:
                    continue
                mb = mb.to(self.device)
                old = None if old_logp is None else old_logp[mb]
                m = self._minibatch_update(full[mb], old, adv[mb], ref_logp, mb, max_new)
                trained_tokens += int(mask[mb].sum())
                if m is None:
                    skipped += 1
                else:
                    per_update.append(m)
        model.eval()
        if self.dist is not None:
            self._refresh_rollout_model()
        out = _aggregate(per_update) | out
        out["updates"] = len(per_update)
        out["nan_skipped"] = skipped
        out["update_tokens_per_s"] = trained_tokens / max(time.perf_counter() - t0, 1e-9)
        return out

    def _minibatches(self, n: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Row indices of each minibatch: whole groups in random order when there are at least as many
        groups as minibatches (a group's prompt is then computed once), random rows otherwise."""
        G, k = self.config.group_size, self.config.minibatches
        if self.config.minibatch_by_group and n % G == 0 and n // G >= k:
            groups = torch.randperm(n // G, generator=gen)
            return [(g[:, None] * G + torch.arange(G)).flatten() for g in groups.tensor_split(k)]
        return list(torch.randperm(n, generator=gen).tensor_split(k))

    def _minibatch_update(
        self,
        b: PaddedRollout,
        old_logp: torch.Tensor | None,
        adv: torch.Tensor,
        ref_logp: torch.Tensor | None,
        rows: torch.Tensor,
        max_new: int,
    ) -> dict[str, float] | None:
        """One optimiser update on a minibatch (micro-batched); None when skipped for a non-finite value."""
        cfg = self.config
        mask = b.response_mask
        normalizer = _normalizer(cfg.algo, mask, max_new)
        options = cfg.loss_options()
        if cfg.algo == "dr_grpo":
            options["max_len"] = max_new
        self.optimizer.zero_grad(set_to_none=True)
        metrics: list[tuple[float, dict[str, float]]] = []
        if self.dist is None:
            chunks = [(sl, True) for sl in self._chunks(len(rows))]
        else:
            chunks = self._rank_chunks(rows)
        for i, (sl, real) in enumerate(chunks):
            if self.dist is not None:
                self.model.set_requires_gradient_sync(i == len(chunks) - 1)
            part = b[sl]
            logp, entropy = self._logprobs(self.model, part, with_entropy=True)
            old = logp.detach() if old_logp is None else old_logp[sl]
            extra = dict(options, entropy=entropy.detach())
            if cfg.tis_cap is not None:
                extra["rollout_logp"] = part.rollout_logp
            if ref_logp is not None:
                extra |= {"ref_logp": ref_logp[rows[sl]], "kl_coef": cfg.kl_coef}
            loss, m = policy_loss(
                cfg.algo, logp, old, adv[sl], part.response_mask, normalizer=normalizer, **extra
            )
            if old_logp is None:
                m |= _gap_metrics(old, part.rollout_logp, part.response_mask)
            if not self._all_finite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                warnings.warn(
                    f"step {self.step + 1}: non-finite loss {float(loss.detach())}; update skipped",
                    stacklevel=2,
                )
                return None
            if self.dist is None:
                loss.backward()
            else:  # FSDP averages the ranks' gradients: scale back to their sum
                (loss * (self.dist.world_size if real else 0.0)).backward()
            if real:
                metrics.append((float(part.response_mask.sum()), m))
        clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        if self.dist is None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        else:
            from openm1.distributed.grad import clip_grad_norm_

            grad_norm = float(clip_grad_norm_(self.model, clip))
            metrics = _gather_lists(metrics)
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            warnings.warn(f"step {self.step + 1}: non-finite gradient norm; update skipped", stacklevel=2)
            return None
        if cfg.warmup_steps:
            for g in self.optimizer.param_groups:
                g["lr"] = cfg.lr * min(1.0, (self.updates + 1) / cfg.warmup_steps)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        out = _aggregate([m for _, m in metrics], [w for w, _ in metrics])
        out["loss"] = sum(
            m["loss"] for _, m in metrics
        )  # each part is already divided by the minibatch's normalizer
        out["grad_norm"] = grad_norm
        return out

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite here and, under torchrun, on every rank (all skip together)."""
        ok = bool(torch.isfinite(loss))
        if self.dist is None:
            return ok
        flag = torch.tensor([1.0 if ok else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0)

    @torch.no_grad()
    def _refresh_rollout_model(self) -> None:
        """Every rank's unsharded rollout copy takes the updated weights (in place, so an engine and
        its CUDA graph keep reading them)."""
        from openm1.distributed.rl import full_state_for_rollout

        state = full_state_for_rollout(self.model)
        for name, p in self.rollout_model.named_parameters():
            p.copy_(state[name])

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / CHECKPOINT_DIR

    def save_checkpoint(self) -> Path:
        """Weights, optimiser, RNG, step and length stage into ``out_dir/checkpoint``, atomically: written
        to a temporary folder, then swapped in (a crash leaves the previous checkpoint). Under torchrun
        a distributed checkpoint (every rank its shards; no RNG state: an RL step draws everything from
        ``(seed, step)``)."""
        if self.dist is not None:
            from openm1.distributed.checkpoint import save_distributed

            state = {
                "step": self.step,
                "updates": self.updates,
                "length": self.length.state_dict(),
                "config": self.config.to_dict(),
                "history": self.history,
            }
            return save_distributed(self.checkpoint_dir, self.model, self.optimizer, extra=state)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.out_dir, prefix=".checkpoint.tmp-"))
        try:
            if self.openm1:
                from openm1.model.checkpoint import save_pretrained

                save_pretrained(self.model, tmp / "model")
            else:
                from safetensors.torch import save_model

                (tmp / "model").mkdir()
                save_model(self.model, str(tmp / "model" / "model.safetensors"))
            state = {
                "step": self.step,
                "updates": self.updates,
                "optimizer": self.optimizer.state_dict(),
                "length": self.length.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "config": self.config.to_dict(),
                "history": self.history,
            }
            torch.save(state, tmp / STATE_FILE)
            old = self.out_dir / ".checkpoint.old"
            shutil.rmtree(old, ignore_errors=True)
            if self.checkpoint_dir.exists():
                os.replace(self.checkpoint_dir, old)
            os.replace(tmp, self.checkpoint_dir)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.checkpoint_dir

    def load_checkpoint(self) -> bool:
        """Resume from ``out_dir/checkpoint`` when it exists; returns whether it did."""
        from openm1.distributed.checkpoint import is_distributed_checkpoint

        folder = self.checkpoint_dir
        if is_distributed_checkpoint(folder):
            return self._load_sharded_checkpoint(folder)
        if not (folder / STATE_FILE).is_file():
            old = self.out_dir / ".checkpoint.old"  # a crash between the two renames of a save
            if not (old / STATE_FILE).is_file():
                return False
            folder = old
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
        self._check_saved_config(state["config"], folder)
        if self.dist is not None:  # written by one process, continued by several
            from openm1.distributed.checkpoint import load_full_optimizer, load_full_pretrained

            load_full_pretrained(self.model, folder / "model")
            names = [n for n, p in self.model.named_parameters() if p.requires_grad]
            load_full_optimizer(self.model, self.optimizer, state["optimizer"], [names])
            self._refresh_rollout_model()
        elif self.openm1:
            from openm1.model.checkpoint import from_pretrained

            loaded = from_pretrained(folder / "model", device=self.device)
            self.model.load_state_dict(loaded.state_dict())
        else:
            from safetensors.torch import load_model

            load_model(self.model, str(folder / "model" / "model.safetensors"), device=str(self.device))
        if self.dist is None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.length.load_state_dict(state["length"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.step, self.updates, self.history = state["step"], state["updates"], list(state["history"])
        return True

    def _check_saved_config(self, saved_dict: dict[str, Any], folder: Path) -> None:
        saved = RLConfig.from_dict(saved_dict)
        changed = [
            k
            for k in ("algo", "group_size", "prompts_per_step", "seed")
            if getattr(saved, k) != getattr(self.config, k)
        ]
        if changed:
            raise ValueError(
                f"the checkpoint in {folder} was made with different {changed}; resume with the same config "
                "or choose another out_dir"
            )

    def _load_sharded_checkpoint(self, folder: Path) -> bool:
        """Resume from a distributed checkpoint, on any number of processes (one included)."""
        from openm1.distributed.checkpoint import load_distributed

        if not self.openm1:
            raise ValueError(f"{folder} is a distributed checkpoint: it resumes an openm1 model only")
        from openm1.distributed.checkpoint import read_meta

        self._check_saved_config(read_meta(folder)["extra"]["config"], folder)
        state = load_distributed(folder, self.model, self.optimizer)
        if self.dist is not None:
            self._refresh_rollout_model()
        self.length.load_state_dict(state["length"])
        self.step, self.updates, self.history = state["step"], state["updates"], list(state["history"])
        return True


# ---------------------------------------------------------------------- helpers
def _shard_policy(model: torch.nn.Module, env: DistEnv, config: RLConfig) -> torch.nn.Module:
    """Shard ``model`` (FSDP2, experts over ``config.ep`` ranks) on this rank's device and return the
    unsharded copy the rollout engine reads. Checked first, identically on every rank."""
    from openm1.distributed import build_mesh, parallelize

    if not is_openm1_model(model):
        raise TypeError(
            f"under torchrun the RL trainer shards openm1 models only, got {type(model).__name__}; "
            "run a transformers model in one process"
        )
    meshes = build_mesh(env.world_size, model.config.num_local_experts, ep=config.ep)
    model.to(env.device)
    copy_for_rollouts = copy.deepcopy(model).eval().requires_grad_(False)
    parallelize(model, meshes)
    return copy_for_rollouts


def _share(n: int, env: DistEnv | None) -> tuple[int, int]:
    """This rank's contiguous share ``[lo, hi)`` of ``n`` items (sizes differ by at most one)."""
    if env is None:
        return 0, n
    base, extra = divmod(n, env.world_size)
    lo = env.rank * base + min(env.rank, extra)
    return lo, lo + base + (env.rank < extra)


def _gather_lists(items: list) -> list:
    """Every rank's ``items`` (picklable), concatenated in rank order."""
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, items)
    return [x for part in every for x in part]


def _gather_rollouts(ro: Rollout | None) -> Rollout:
    """The scored rollouts of all ranks as one batch, in rank order (a rank with none sends None)."""
    parts = [p for p in _gather_lists([ro]) if p is not None]
    out = Rollout([], [], [], [], [], [], parts[0].group_size)
    offset, rewards = 0, []
    for p in parts:
        out.prompt_ids += p.prompt_ids
        out.response_ids += p.response_ids
        out.rollout_logp += p.rollout_logp
        out.finish_reasons += p.finish_reasons
        out.texts += p.texts
        out.prompt_index += [offset + i for i in p.prompt_index]
        out.prompts += p.prompts
        out.reward_details += p.reward_details
        rewards.append(p.rewards)
        offset += max(p.prompt_index) + 1
    out.rewards = torch.cat(rewards)
    return out


def shared_prompt_logprobs(
    model: torch.nn.Module, b: PaddedRollout, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The response log-probs of an openm1 model with each distinct prompt computed once: one forward
    over the distinct prompts fills a cache, its rows are repeated for the samples answering each
    prompt, and a second forward runs all responses on it. Gradients flow through the cache into the
    prompts' activations, so this equals the full padded forward (tested) while the G samples of a
    group pay for their prompt once.
    """
    from openm1.model.cache import HybridCache

    P, T = b.prompt_len, b.response_mask.shape[1]
    uniq, which = torch.unique(b.prompt_index, return_inverse=True)
    first = torch.full((len(uniq),), len(which), dtype=torch.long, device=which.device)
    first = first.scatter_reduce(0, which, torch.arange(len(which), device=which.device), "amin")
    prompt_mask = b.attention_mask[first, :P]
    cache = HybridCache()
    head = model(b.input_ids[first, :P], attention_mask=prompt_mask, cache=cache, logits_to_keep=1).logits
    for layer, (key, value) in list(cache.key_values.items()):
        cache.key_values[layer] = (key[which], value[which])
    for layer, state in list(cache.states.items()):
        cache.states[layer] = state[which]
    # the responses' right padding needs no mask: it comes after every real token of its row
    mask = torch.cat((prompt_mask[which], torch.ones_like(b.attention_mask[:, P:])), dim=1)
    tail = model(b.response_ids, attention_mask=mask, cache=cache, logits_to_keep=T).logits
    logits = torch.cat((head[which], tail[:, :-1]), dim=1)
    return token_logprobs(logits, b.response_ids, temperature, with_entropy=with_entropy)


def _check_tasks(tasks: Any) -> None:
    if hasattr(tasks, "batch") or hasattr(tasks, "sample"):
        return
    if isinstance(tasks, Sequence) and tasks and all(isinstance(t, Task) for t in tasks):
        return
    raise TypeError(
        "tasks must be a Curriculum, a TaskSource (with sample(rng)) or a non-empty list of Task, got "
        f"{type(tasks).__name__}"
    )


def _normalizer(algo: str, mask: torch.Tensor, max_new: int) -> float:
    """The minibatch's loss denominator, so micro-batches accumulate to the unsplit gradient."""
    if algo == "grpo":
        return float(mask.shape[0])
    if algo == "dr_grpo":
        return float(mask.shape[0] * max_new)
    return float(mask.sum().clamp(min=1))


def _rollout_metrics(ro: Rollout, max_new: int) -> dict[str, Any]:
    r, lengths = ro.rewards, ro.lengths.float()
    errors = [d.get("error") for d in ro.reward_details if isinstance(d, dict) and d.get("error")]
    out: dict[str, Any] = {
        "reward/mean": float(r.mean()),
        "reward/std": float(r.std()) if len(r) > 1 else 0.0,
        "accuracy": float((r >= 1.0).float().mean()),
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "truncation_rate": float(ro.truncated.float().mean()),
        "repetition_rate": float(sum(f == "repetition" for f in ro.finish_reasons) / len(ro)),
        "reward_errors": len(errors),
    }
    if errors:
        out["reward_error_example"] = str(errors[0])[:200]
    return out


def _gap_metrics(logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the trainer's log-probs are from the rollout engine's (same weights: precision only)."""
    gap = (logp - rollout_logp) * mask
    tokens = mask.sum().clamp(min=1)
    return {
        "logp_gap/mean": float(gap.sum() / tokens),
        "logp_gap/abs_mean": float(gap.abs().sum() / tokens),
        "logp_gap/abs_max": float(gap.abs().max()),
    }


def _aggregate(items: list[dict[str, float]], weights: list[float] | None = None) -> dict[str, float]:
    """Weighted means of the metric dicts; keys ending in ``max`` take the max, in ``min`` the min."""
    if not items:
        return {}
    weights = weights or [1.0] * len(items)
    total = sum(weights) or 1.0
    out: dict[str, float] = {}
    for key in items[0]:
        vals = [float(m[key]) for m in items if key in m]
        if key.endswith("max"):
            out[key] = max(vals)
        elif key.endswith("min"):
            out[key] = min(vals)
        else:
            out[key] = sum(w * float(m[key]) for w, m in zip(weights, items, strict=True) if key in m) / total
    return out


def _summary(m: dict[str, Any]) -> str:
    parts = [
        f"reward {m['reward/mean']:.3f}",
        f"acc {m['accuracy']:.2f}",
        f"len {m['response_length/mean']:.0f}",
    ]
    if "eval/accuracy" in m:
        parts.append(f"eval {m['eval/accuracy']:.2f}")
    if m.get("nan_skipped"):
        parts.append(f"skipped {m['nan_skipped']}")
    return " | ".join(parts)


class _progress:
    """A rich progress bar over the steps (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.enabled, self.total, self.done = enabled, total, done
        self.bar = None

    def __enter__(self):  # noqa: ANN204
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("RL"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
            )
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total, completed=self.done)

        def advance(text: str) -> None:
            if self.bar is not None:
                self.bar.update(self.task, advance=1, description=text)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
