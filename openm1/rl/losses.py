"""Policy-gradient objectives: CISPO (the paper's) and its baselines GRPO, DAPO, PPO and Dr. GRPO.

Every algorithm sees per-token ``[batch, time]`` tensors: ``logp`` (current policy, with gradient),
``old_logp`` (the policy that sampled, or the trainer's recomputation of it), ``advantages`` (per
sequence ``[batch]`` or per token ``[batch, time]``) and ``mask`` (1 on response tokens). The ratio is
``r = exp(logp - old_logp)`` and every algorithm's clip range is ``[1 - eps_low, 1 + eps_high]``.

=========== ============================================ ================================ ==============
algo        per-token term                               normalisation                    eps low / high
=========== ============================================ ================================ ==============
``cispo``   ``-sg(clip(r)) * A * logp`` (x trust mask)   tokens of the batch              None / 4.0
``grpo``    ``-min(r A, clip(r) A)`` + kl_coef * k3 KL   per sequence, then over them     0.2 / 0.2
``dapo``    ``-min(r A, clip(r) A)``                     tokens of the batch              0.2 / 0.28
``ppo``     ``-min(r A, clip(r) A)``                     tokens of the batch              0.2 / 0.2
``dr_grpo`` ``-min(r A, clip(r) A)``                     ``batch * max_len`` (constant)   0.2 / 0.2
=========== ============================================ ================================ ==============

**CISPO's ``eps_high`` (default 4.0, a cap of 5.0 on the weight).** The paper does not give it. The
weight's clip exists only to bound the variance of the importance weight; unlike PPO's clip it never
removes a token's gradient, so a tight cap (verl's 1.2) throws away the off-policy correction that
several minibatch updates need, while no cap lets one rare token dominate the step. Scaling studies
of CISPO used caps of 4 to 8 on the weight, and TRL documents 5.0 (ScaleRL's epsilon_max, arXiv
2510.13786) as the value to use with its ``loss_type="cispo"``; ``eps_high=4.0`` is that same cap in
openm1's ``1 + eps_high`` convention, so runs are comparable with TRL's. The lower bound is off
(``eps_low=None``), as in the paper. It is a guess to sweep, not a tuned value.

**Truncated importance sampling** (any algorithm): give ``rollout_logp`` (the rollout engine's
log-probs of the sampled tokens) and every token's loss is multiplied by the constant
``min(exp(old_logp - rollout_logp), tis_cap)``, correcting for the engine's and the trainer's
probabilities disagreeing (as TRL's ``vllm_importance_sampling_mode="token_truncate"``).

``normalizer`` overrides the denominator (total tokens, sequences, or ``batch * max_len``): pass the
whole group's count when a group is split into micro-batches, so that accumulated gradients equal
the unsplit one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: CISPO's default upper clip: the weight is capped at 1 + 4.0 = 5.0 (see the module docstring).
CISPO_EPS_HIGH = 4.0
#: Default cap on the truncated importance-sampling weight against the rollout engine (TRL's default).
TIS_CAP = 3.0


class LossError(ValueError):
    """Inputs or options a loss cannot use; the message names the problem and the fix."""


# --------------------------------------------------------------------------- per-token terms


def ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """The importance weight ``pi_theta / pi_old`` per token (carries ``logp``'s gradient)."""
    return torch.exp(logp - old_logp)


def _bounds(eps_low: float | None, eps_high: float | None) -> tuple[float | None, float | None]:
    return (None if eps_low is None else 1.0 - eps_low), (None if eps_high is None else 1.0 + eps_high)


def clipped_surrogate(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, eps_low: float | None, eps_high: float | None
) -> Tensor:
    """PPO's per-token loss ``-min(r A, clip(r, 1-eps_low, 1+eps_high) A)``: the clip zeroes the gradient
    of a token whose ratio has left the range in the direction of its advantage."""
    r = ratio(logp, old_logp)
    lo, hi = _bounds(eps_low, eps_high)
    return -torch.min(r * advantages, torch.clamp(r, lo, hi) * advantages)


def trust_region_mask(r: Tensor, advantages: Tensor, eps_low: float | None, eps_high: float | None) -> Tensor:
    """The unified form's ``M``: 0 where PPO's clip would drop the token (``A > 0, r > 1+eps_high`` or
    ``A < 0, r < 1-eps_low``), else 1."""
    lo, hi = _bounds(eps_low, eps_high)
    drop = torch.zeros_like(r, dtype=torch.bool)
    if hi is not None:
        drop |= (advantages > 0) & (r > hi)
    if lo is not None:
        drop |= (advantages < 0) & (r < lo)
    return (~drop).to(r.dtype)


def cispo_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    eps_low: float | None,
    eps_high: float | None,
    mask_trust_region: bool = False,
) -> Tensor:
    """CISPO's per-token loss ``-sg(clip(r)) * A * logp`` (times the trust-region mask if asked): every
    token keeps the gradient ``sg(w) * A * grad logp``, however far its ratio has moved."""
    r = ratio(logp, old_logp).detach()
    lo, hi = _bounds(eps_low, eps_high)
    term = -torch.clamp(r, lo, hi) * advantages * logp
    if mask_trust_region:
        term = term * trust_region_mask(r, advantages, eps_low, eps_high)
    return term


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(pi_theta || pi_ref) per token: ``exp(ref - logp) - (ref - logp) - 1``
    (non-negative, unbiased; GRPO's and TRL's choice)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


# --------------------------------------------------------------------------- reductions


def token_mean(x: Tensor, mask: Tensor, normalizer: float | None = None) -> Tensor:
    """Sum over all response tokens of the batch / their count (DAPO's and CISPO's token level)."""
    denom = mask.sum().clamp(min=1.0) if normalizer is None else normalizer
    return (x * mask).sum() / denom


def sequence_mean(x: Tensor, mask: Tensor, normalizer: float | None = None) -> Tensor:
    """Mean over each sequence's tokens, then over sequences (GRPO); ``normalizer`` = sequence count."""
    per_seq = (x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_seq.sum() / (x.shape[0] if normalizer is None else normalizer)


def constant_mean(
    x: Tensor, mask: Tensor, normalizer: float | None = None, max_len: int | None = None
) -> Tensor:
    """Sum over tokens / ``batch * max_len`` (Dr. GRPO: a constant denominator, so no length bias)."""
    denom = x.shape[0] * (x.shape[1] if max_len is None else max_len) if normalizer is None else normalizer
    return (x * mask).sum() / denom


# --------------------------------------------------------------------------- the algorithms


def cispo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float | None = None,
    eps_high: float | None = CISPO_EPS_HIGH,
    mask_trust_region: bool = False,
    tis_weight: Tensor | None = None,
    normalizer: float | None = None,
) -> Tensor:
    """CISPO: ``-1/sum|o_i| * sum sg(clip(r)) A logp``; ``mask_trust_region=True`` gives the unified form."""
    term = cispo_surrogate(logp, old_logp, advantages, eps_low, eps_high, mask_trust_region)
    return token_mean(_tis(term, tis_weight), mask, normalizer)


def dapo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float | None = 0.2,
    eps_high: float | None = 0.28,
    tis_weight: Tensor | None = None,
    normalizer: float | None = None,
) -> Tensor:
    """DAPO: PPO's clip with clip-higher (0.2 / 0.28), averaged over all tokens of the batch, no KL."""
    term = clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high)
    return token_mean(_tis(term, tis_weight), mask, normalizer)


def ppo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float | None = 0.2,
    eps_high: float | None = 0.2,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    tis_weight: Tensor | None = None,
    normalizer: float | None = None,
) -> Tensor:
    """PPO's clipped objective averaged over tokens (optionally with a k3 KL penalty)."""
    term = _with_kl(
        _tis(clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high), tis_weight),
        logp,
        ref_logp,
        kl_coef,
    )
    return token_mean(term, mask, normalizer)


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float | None = 0.2,
    eps_high: float | None = 0.2,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    tis_weight: Tensor | None = None,
    normalizer: float | None = None,
) -> Tensor:
    """GRPO: PPO's clip, mean per sequence then over the group, plus ``kl_coef`` * k3 KL to ``ref_logp``."""
    term = _with_kl(
        _tis(clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high), tis_weight),
        logp,
        ref_logp,
        kl_coef,
    )
    return sequence_mean(term, mask, normalizer)


def dr_grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float | None = 0.2,
    eps_high: float | None = 0.2,
    max_len: int | None = None,
    tis_weight: Tensor | None = None,
    normalizer: float | None = None,
) -> Tensor:
    """Dr. GRPO: PPO's clip summed over tokens / ``batch * max_len`` (``max_len`` defaults to ``time``);
    pair it with advantages that are not divided by the group's std."""
    term = clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high)
    return constant_mean(_tis(term, tis_weight), mask, normalizer, max_len)


def _tis(term: Tensor, tis_weight: Tensor | None) -> Tensor:
    return term if tis_weight is None else term * tis_weight


def _with_kl(term: Tensor, logp: Tensor, ref_logp: Tensor | None, kl_coef: float) -> Tensor:
    if kl_coef == 0.0:
        return term
    if ref_logp is None:
        raise LossError("kl_coef != 0 needs ref_logp (the reference policy's log-probs of the same tokens)")
    return term + kl_coef * k3_kl(logp, ref_logp.detach())


@dataclass(frozen=True)
class Algorithm:
    """One entry of the registry: the loss function, its default clip range and the options it takes."""

    fn: Callable[..., Tensor]
    eps_low: float | None
    eps_high: float | None
    options: frozenset[str]
    """Options beyond the common ones (eps_low, eps_high, rollout_logp, tis_cap, entropy, normalizer)."""


ALGORITHMS: dict[str, Algorithm] = {
    "cispo": Algorithm(cispo_loss, None, CISPO_EPS_HIGH, frozenset({"mask_trust_region"})),
    "grpo": Algorithm(grpo_loss, 0.2, 0.2, frozenset({"ref_logp", "kl_coef"})),
    "dapo": Algorithm(dapo_loss, 0.2, 0.28, frozenset()),
    "ppo": Algorithm(ppo_loss, 0.2, 0.2, frozenset({"ref_logp", "kl_coef"})),
    "dr_grpo": Algorithm(dr_grpo_loss, 0.2, 0.2, frozenset({"max_len"})),
}
COMMON_OPTIONS = frozenset({"eps_low", "eps_high", "rollout_logp", "tis_cap", "entropy", "normalizer"})
_UNSET = object()


# --------------------------------------------------------------------------- the entry point


def policy_loss(
    algo: str,
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    **options,
) -> tuple[Tensor, dict[str, float]]:
    """The loss to minimise (``-J``) for ``algo`` and a dict of float metrics.

    Options: ``eps_low`` / ``eps_high`` (clip range ``[1-eps_low, 1+eps_high]``; ``None`` = no bound),
    ``rollout_logp`` and ``tis_cap`` (truncated importance sampling), ``entropy`` (``[batch, time]``, for
    the metrics only), ``normalizer``; per algorithm: cispo ``mask_trust_region``; grpo and ppo
    ``ref_logp`` and ``kl_coef``; dr_grpo ``max_len``. See the module docstring for the defaults.

    Metrics: ``loss``; ``clip_frac`` (+ ``/low``, ``/high``): PPO-family, tokens whose gradient the clip
    zeroed; CISPO, tokens whose weight was clipped; ``zero_grad_frac``: tokens with no gradient (CISPO:
    only with ``mask_trust_region``); ``is_weight/mean|max|min``; ``approx_kl`` (k3 of KL(old || new));
    ``entropy``; ``kl_ref``; ``tis/weight_mean``, ``tis/clip_frac``, ``tis/logp_gap``.
    """
    if algo not in ALGORITHMS:
        raise LossError(f"unknown algorithm {algo!r}; valid: {', '.join(ALGORITHMS)}")
    spec = ALGORITHMS[algo]
    unknown = set(options) - COMMON_OPTIONS - spec.options
    if unknown:
        allowed = sorted(COMMON_OPTIONS | spec.options)
        raise LossError(f"{algo} does not take option(s) {sorted(unknown)}; allowed: {allowed}")
    eps_low = options.pop("eps_low", spec.eps_low)
    eps_high = options.pop("eps_high", spec.eps_high)
    for name, eps in (("eps_low", eps_low), ("eps_high", eps_high)):
        if eps is not None and (not isinstance(eps, (int, float)) or math.isnan(eps) or eps < 0):
            raise LossError(f"{name} must be a non-negative number or None (no bound), got {eps!r}")
    if algo != "cispo" and (eps_low is None or eps_high is None):
        raise LossError(
            f"{algo} needs both eps_low and eps_high (PPO's clip); only cispo may leave a bound off"
        )

    mask = _check_inputs(logp, old_logp, advantages, mask)
    if logp.dtype in (torch.float16, torch.bfloat16):  # ratios of half-precision log-probs are too coarse
        logp, mask = logp.float(), mask.float()
    old_logp = old_logp.to(logp.dtype)
    advantages = _per_token(advantages, logp).detach()
    old_logp = old_logp.detach()
    rollout_logp = options.pop("rollout_logp", None)
    tis_cap = options.pop("tis_cap", TIS_CAP)
    entropy = options.pop("entropy", None)
    for name, t in (
        ("rollout_logp", rollout_logp),
        ("ref_logp", options.get("ref_logp")),
        ("entropy", entropy),
    ):
        if t is not None and t.shape != logp.shape:
            raise LossError(f"{name} has shape {tuple(t.shape)}, expected {tuple(logp.shape)} like logp")
    tis_weight = None
    if rollout_logp is not None:
        if tis_cap is not None and tis_cap <= 0:
            raise LossError(f"tis_cap must be positive (or None for no cap), got {tis_cap}")
        tis_weight = torch.exp(old_logp - rollout_logp.detach())
        if tis_cap is not None:
            tis_weight = tis_weight.clamp(max=tis_cap)
    normalizer = options.pop("normalizer", None)
    if normalizer is not None and not normalizer > 0:
        raise LossError(f"normalizer must be positive, got {normalizer}")

    loss = spec.fn(
        logp,
        old_logp,
        advantages,
        mask,
        eps_low=eps_low,
        eps_high=eps_high,
        tis_weight=tis_weight,
        normalizer=normalizer,
        **options,
    )
    metrics = loss_metrics(
        algo,
        logp,
        old_logp,
        advantages,
        mask,
        eps_low,
        eps_high,
        mask_trust_region=options.get("mask_trust_region", False),
    )
    metrics["loss"] = float(loss.detach())
    if entropy is not None:
        metrics["entropy"] = _mean(entropy.detach(), mask)
    if options.get("kl_coef", 0.0) and options.get("ref_logp") is not None:
        metrics["kl_ref"] = _mean(k3_kl(logp.detach(), options["ref_logp"].detach()), mask)
    if rollout_logp is not None:
        raw = torch.exp(old_logp - rollout_logp.detach())
        metrics["tis/weight_mean"] = _mean(tis_weight, mask)
        metrics["tis/clip_frac"] = _mean((raw > tis_cap).float(), mask) if tis_cap is not None else 0.0
        metrics["tis/logp_gap"] = _mean((old_logp - rollout_logp.detach()).abs(), mask)
    return loss, metrics


@torch.no_grad()
def loss_metrics(
    algo: str,
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float | None,
    eps_high: float | None,
    mask_trust_region: bool = False,
) -> dict[str, float]:
    """Clip fractions, importance-weight statistics and the approximate KL, over response tokens."""
    r = ratio(logp.detach(), old_logp)
    lo, hi = _bounds(eps_low, eps_high)
    below = r < lo if lo is not None else torch.zeros_like(r, dtype=torch.bool)
    above = r > hi if hi is not None else torch.zeros_like(r, dtype=torch.bool)
    dropped = 1.0 - trust_region_mask(r, advantages, eps_low, eps_high)
    if algo == "cispo":
        low, high = below, above
        zero_grad = _mean(dropped, mask) if mask_trust_region else 0.0
    else:
        low, high = below & (advantages < 0), above & (advantages > 0)
        zero_grad = _mean(dropped, mask)
    valid = mask > 0
    rv = r[valid] if bool(valid.any()) else r.new_ones(1)
    log_r = logp.detach() - old_logp
    return {
        "clip_frac": _mean((low | high).float(), mask),
        "clip_frac/low": _mean(low.float(), mask),
        "clip_frac/high": _mean(high.float(), mask),
        "zero_grad_frac": zero_grad,
        "is_weight/mean": float(rv.mean()),
        "is_weight/max": float(rv.max()),
        "is_weight/min": float(rv.min()),
        "approx_kl": _mean(r - 1.0 - log_r, mask),
    }


def _mean(x: Tensor, mask: Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1.0))


def _check_inputs(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    if logp.dim() != 2:
        raise LossError(f"logp must be [batch, time], got shape {tuple(logp.shape)}")
    if old_logp.shape != logp.shape:
        raise LossError(f"old_logp has shape {tuple(old_logp.shape)}, expected {tuple(logp.shape)} like logp")
    if mask.shape != logp.shape:
        raise LossError(f"mask has shape {tuple(mask.shape)}, expected {tuple(logp.shape)} like logp")
    if advantages.shape not in (logp.shape, logp.shape[:1], (logp.shape[0], 1)):
        raise LossError(
            f"advantages has shape {tuple(advantages.shape)}; expected per sequence [{logp.shape[0]}] "
            f"or per token {list(logp.shape)}"
        )
    return mask.to(logp.dtype)


def _per_token(advantages: Tensor, like: Tensor) -> Tensor:
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    return advantages.to(like.dtype).expand_as(like)
