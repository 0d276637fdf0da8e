"""Rollouts: G sampled responses per prompt, with the sampler's own per-token log-probs.

Two back ends produce the same :class:`Rollout`:

- an openm1 model goes through the generation :class:`~openm1.generate.engine.Engine` (batched prefill
  and decode over a preallocated cache, continuous batching, the paper's early repetition truncation);
  its log-probs are the float32 log-softmax of the model's logits, the numbers the trainer recomputes;
- any transformers causal LM goes through its ``generate``; the log-probs come from the raw logits of
  each step (``output_logits=True``), again log-softmaxed in float32.

Rewards are filled in afterwards (:func:`score_rollout`), each sample guarded so that a reward that
raises or hangs scores 0 with the reason kept in ``reward_details``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from openm1.generate.sampling import SamplingParams
from openm1.rewards.base import RewardResult, guarded

#: Finish reasons that mean the response was cut before the model ended it.
TRUNCATED = ("length", "repetition")


@dataclass
class Rollout:
    """A batch of sampled responses: ``group_size`` consecutive samples per prompt.

    Lists are per sample; ``prompt_index[i]`` says which prompt sample ``i`` answers. ``rollout_logp[i]``
    has one float per response token (the sampler's log-prob at temperature 1)."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    rollout_logp: list[list[float]]
    finish_reasons: list[str]
    texts: list[str]
    prompt_index: list[int]
    group_size: int
    prompts: list[str] = field(default_factory=list)
    """The prompt text of each sample (for rewards); empty when the prompts were given as ids."""
    rewards: torch.Tensor | None = None
    """``[num_samples]`` float32 once scored."""
    reward_details: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.response_ids)

    @property
    def num_groups(self) -> int:
        return len(self) // self.group_size

    @property
    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(r) for r in self.response_ids], dtype=torch.long)

    @property
    def truncated(self) -> torch.Tensor:
        """True where generation was cut (length limit or repetition), not ended by the model."""
        return torch.tensor([f in TRUNCATED for f in self.finish_reasons], dtype=torch.bool)

    def select(self, keep: torch.Tensor | Sequence[int]) -> Rollout:
        """The samples at ``keep`` (indices, or a bool mask), e.g. the groups that dynamic sampling kept."""
        if isinstance(keep, torch.Tensor) and keep.dtype == torch.bool:
            keep = keep.nonzero().flatten()
        idx = [int(i) for i in keep]

        def pick(xs: list) -> list:
            return [xs[i] for i in idx] if xs else []

        return Rollout(
            pick(self.prompt_ids),
            pick(self.response_ids),
            pick(self.rollout_logp),
            pick(self.finish_reasons),
            pick(self.texts),
            pick(self.prompt_index),
            self.group_size,
            pick(self.prompts),
            None if self.rewards is None else self.rewards[idx],
            pick(self.reward_details),
        )

    def padded(self, pad_id: int = 0, device: torch.device | str = "cpu") -> PaddedRollout:
        """Tensors for a training forward: prompts left-padded, responses right-padded (see
        :class:`PaddedRollout`)."""
        n = len(self)
        P = max(len(p) for p in self.prompt_ids)
        T = max(1, max(len(r) for r in self.response_ids))
        input_ids = torch.full((n, P + T), pad_id, dtype=torch.long)
        attention_mask = torch.zeros(n, P + T, dtype=torch.long)
        response_mask = torch.zeros(n, T, dtype=torch.float32)
        rollout_logp = torch.zeros(n, T, dtype=torch.float32)
        for i, (p, r, lp) in enumerate(
            zip(self.prompt_ids, self.response_ids, self.rollout_logp, strict=True)
        ):
            input_ids[i, P - len(p) : P] = torch.tensor(p)
            attention_mask[i, P - len(p) : P + len(r)] = 1
            if r:
                input_ids[i, P : P + len(r)] = torch.tensor(r)
                response_mask[i, : len(r)] = 1
                rollout_logp[i, : len(r)] = torch.tensor(lp, dtype=torch.float32)
        return PaddedRollout(
            input_ids.to(device),
            attention_mask.to(device),
            response_mask.to(device),
            rollout_logp.to(device),
            P,
            torch.tensor(self.prompt_index, dtype=torch.long, device=device),
        )


@dataclass
class PaddedRollout:
    """``input_ids``/``attention_mask`` ``[n, P + T]`` (prompt left-padded to P, response right-padded
    to T); ``response_mask``/``rollout_logp`` ``[n, T]``: the response tokens are
    ``input_ids[:, P:]`` and the logits that predict them sit at positions ``P - 1 .. P + T - 2``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    rollout_logp: torch.Tensor
    prompt_len: int
    prompt_index: torch.Tensor | None = None
    """``[n]``: rows with the same value share their prompt (the trainer computes it once for them)."""

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len :]

    def __getitem__(self, rows: slice | torch.Tensor) -> PaddedRollout:
        return PaddedRollout(
            self.input_ids[rows],
            self.attention_mask[rows],
            self.response_mask[rows],
            self.rollout_logp[rows],
            self.prompt_len,
            None if self.prompt_index is None else self.prompt_index[rows],
        )


# ---------------------------------------------------------------------- generation
def encode_prompts(tokenizer: Any, prompts: Sequence[str | list[int]], chat: bool = True) -> list[list[int]]:
    """Token ids of each prompt: ids pass through; text goes through the chat template (one user
    message) when ``chat``, else through ``encode``."""
    out = []
    for p in prompts:
        if isinstance(p, str) and chat:
            try:
                ids = tokenizer.chat_prompt([{"role": "user", "content": p}])
            except ValueError as e:
                raise ValueError(f"{e}; or set chat = false to encode prompts as plain text") from e
        elif isinstance(p, str):
            ids = tokenizer.encode(p)
        else:
            ids = [int(t) for t in p]
        if not ids:
            raise ValueError("a prompt encoded to no tokens; give non-empty prompts")
        out.append(list(ids))
    return out


def is_openm1_model(model: torch.nn.Module) -> bool:
    from openm1.model.model import MiniMaxM1ForCausalLM

    return isinstance(model, MiniMaxM1ForCausalLM)


def rollout(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str | list[int]],
    group_size: int,
    params: SamplingParams | None = None,
    *,
    seed: int = 0,
    chat: bool = True,
    engine: Any = None,
    max_batch: int | None = None,
    first_sample: int = 0,
) -> Rollout:
    """``group_size`` samples for each prompt (text or ids), the samples of one prompt consecutive.

    openm1 models decode through ``engine`` (or a fresh :class:`Engine` holding every sample at once,
    or ``max_batch`` rows); other models through transformers' ``generate``. Sample ``i`` draws from a
    generator seeded by ``(seed, i)``, so a rollout is reproducible whatever else is batched with it;
    ``first_sample`` is the index of the first (a process's share of a batch spread over processes
    draws what one process would for the same samples). openm1 models only.
    """
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    if not prompts:
        raise ValueError("rollout needs at least one prompt")
    params = params or SamplingParams()
    ids = encode_prompts(tokenizer, prompts, chat)
    texts = [p if isinstance(p, str) else tokenizer.decode(p) for p in prompts]
    sample_ids = [ids[k] for k in range(len(ids)) for _ in range(group_size)]
    index = [k for k in range(len(ids)) for _ in range(group_size)]
    if is_openm1_model(model) or engine is not None:
        gen = _engine_generate(model, tokenizer, sample_ids, params, seed, engine, max_batch, first_sample)
    else:
        if first_sample:
            raise ValueError("first_sample is supported for openm1 models (the Engine) only")
        gen = _hf_generate(model, tokenizer, sample_ids, params, seed, max_batch)
    responses, logps, reasons, outs = gen
    return Rollout(
        sample_ids,
        responses,
        logps,
        reasons,
        outs,
        index,
        group_size,
        prompts=[texts[k] for k in index],
    )


def make_engine(
    model: torch.nn.Module, tokenizer: Any, max_batch: int, max_len: int, cuda_graph: bool = False
) -> Any:
    """An :class:`Engine` for rollouts (reuse it across steps: its cache is allocated once). With
    ``cuda_graph`` the decode step replays a CUDA graph; optimiser steps update the weights in place,
    so the graph keeps reading the current policy."""
    from openm1.generate.engine import Engine

    return Engine(model, tokenizer, max_batch=max_batch, max_len=max_len, cuda_graph=cuda_graph)


def _engine_generate(model, tokenizer, sample_ids, params, seed, engine, max_batch, first=0):  # noqa: ANN001, ANN202
    longest = max(len(p) for p in sample_ids) + params.max_new_tokens
    if engine is None or engine.max_len < longest:
        engine = make_engine(model, tokenizer, max_batch or len(sample_ids), longest)
    was_training = model.training
    per_sample = [_with_seed(params, seed, first + i) for i in range(len(sample_ids))]
    try:
        results = engine.generate(sample_ids, per_sample)
    finally:
        model.train(was_training)
    return (
        [r.token_ids for r in results],
        [r.logprobs for r in results],
        [r.finish_reason for r in results],
        [r.text for r in results],
    )


def _with_seed(params: SamplingParams, seed: int, i: int) -> SamplingParams:
    from dataclasses import replace

    return replace(params, seed=(seed * 1_000_003 + i) % (2**62))


@torch.no_grad()
def _hf_generate(model, tokenizer, sample_ids, params, seed, max_batch):  # noqa: ANN001, ANN202
    """transformers' ``generate`` on left-padded prompts; log-probs from the raw per-step logits."""
    if params.stop or params.logprobs:
        raise ValueError("stop strings and top logprobs are supported only for openm1 models (the Engine)")
    device = next(model.parameters()).device
    eos = set(params.stop_token_ids)
    if not params.ignore_eos:
        eos |= set(getattr(tokenizer, "eos_token_ids", None) or [])
        cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos |= {cfg_eos} if isinstance(cfg_eos, int) else set(cfg_eos or [])
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = int(pad if pad is not None else (min(eos) if eos else 0))
    was_training = model.training
    model.eval()
    rows = max_batch or len(sample_ids)
    out_ids, out_logp, out_reason = [], [], []
    torch.manual_seed(seed)
    try:
        for a in range(0, len(sample_ids), rows):
            part = sample_ids[a : a + rows]
            P = max(len(p) for p in part)
            inp = torch.full((len(part), P), pad, dtype=torch.long)
            mask = torch.zeros(len(part), P, dtype=torch.long)
            for i, p in enumerate(part):
                inp[i, P - len(p) :] = torch.tensor(p)
                mask[i, P - len(p) :] = 1
            kwargs: dict[str, Any] = {
                "max_new_tokens": params.max_new_tokens,
                "do_sample": not params.greedy,
                "pad_token_id": pad,
                "eos_token_id": sorted(eos) if eos else None,
                "output_logits": True,
                "return_dict_in_generate": True,
            }
            if not params.greedy:
                kwargs |= {"temperature": params.temperature, "top_k": params.top_k or None}
                kwargs |= {"top_p": params.top_p}
            if not eos:
                kwargs["min_new_tokens"] = params.max_new_tokens
            out = model.generate(input_ids=inp.to(device), attention_mask=mask.to(device), **kwargs)
            new = out.sequences[:, P:].cpu()
            logits = torch.stack(out.logits, dim=1).float().cpu()  # [rows, steps, vocab], raw
            logp = torch.log_softmax(logits, dim=-1).gather(-1, new[:, :, None])[..., 0]
            for i in range(len(part)):
                toks = new[i].tolist()
                end = next((t + 1 for t, tok in enumerate(toks) if tok in eos), None)
                reason = "stop" if end is not None else "length"
                end = end or len(toks)
                out_ids.append(toks[:end])
                out_logp.append(logp[i, :end].tolist())
                out_reason.append(reason)
    finally:
        model.train(was_training)
    texts = [tokenizer.decode([t for t in r if t not in eos]) for r in out_ids]
    return out_ids, out_logp, out_reason, texts


# ---------------------------------------------------------------------- rewards
def score_rollout(
    ro: Rollout,
    tasks: Sequence[Any],
    timeout_s: float | None = 30.0,
    max_workers: int = 8,
) -> Rollout:
    """Fill ``ro.rewards`` and ``ro.reward_details`` with each sample's task reward; ``tasks[k]`` is
    the :class:`~openm1.rl.curriculum.Task` of prompt ``k``. A reward that raises, hangs or returns a
    non-finite score gives 0 with ``details["error"]``. Samples of tasks sharing a reward are scored
    concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    if len(tasks) != max(ro.prompt_index) + 1:
        raise ValueError(
            f"the rollout answers {max(ro.prompt_index) + 1} prompts but {len(tasks)} tasks given"
        )
    guards = {id(t.reward): guarded(t.reward, timeout_s) for t in tasks}

    def one(i: int) -> RewardResult:
        task = tasks[ro.prompt_index[i]]
        return guards[id(task.reward)](task.prompt, ro.texts[i], task.reference, **task.meta)

    if max_workers <= 1 or len(ro) == 1:
        results = [one(i) for i in range(len(ro))]
    else:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(ro))) as pool:
            results = list(pool.map(one, range(len(ro))))
    ro.rewards = torch.tensor([r.score for r in results], dtype=torch.float32)
    ro.reward_details = [r.details for r in results]
    return ro
