"""openm1's losses against TRL's own loss code (``GRPOTrainer._compute_loss``) on the same inputs.

The trainer is built without ``__init__`` (no model, no datasets) with only the attributes that
``_compute_loss`` reads, and its forward pass (``_get_per_token_logps_and_entropies``) is replaced by
one returning our ``logp``, so TRL's actual per-token loss, clipping and normalisation run.

Conventions that differ, and are mapped here:

* TRL's ``epsilon_high`` is, for ``loss_type="cispo"`` only, the *absolute* cap on the weight
  (``clamp(r, max=epsilon_high)``); openm1's cap is ``1 + eps_high``. So TRL 5.0 = openm1 4.0.
* TRL's token-level losses (cispo, dapo) divide by ``num_items_in_batch``, the response tokens of the
  whole generation batch across processes; openm1 divides by the tokens given (or ``normalizer``).
  They agree when ``num_items_in_batch`` is this batch's token count (one process, no accumulation,
  eval mode, as here); in training TRL rescales by accumulation steps / steps per generation.
* TRL's KL term is multiplied by the importance ratio by default (``use_bias_correction_kl=True``);
  openm1's GRPO uses the plain k3 estimator of the GRPO paper, i.e. TRL with that flag off.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from openm1.rl.losses import policy_loss

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")


class _OneProcess:
    num_processes = 1

    def reduce(self, x, reduction="sum"):
        return x

    def gather(self, x):
        return x

    gather_for_metrics = gather


def trl_loss(loss_type, logp, old, adv, mask, *, epsilon_low, epsilon_high, beta=0.0, ref=None, max_len=None):
    t = trl_grpo.GRPOTrainer.__new__(trl_grpo.GRPOTrainer)
    t.loss_type, t.epsilon_low, t.epsilon_high, t.beta = loss_type, epsilon_low, epsilon_high, beta
    t.importance_sampling_level, t.top_entropy_quantile, t.off_policy_mask_threshold = "token", 1.0, None
    t.use_vllm, t.aux_loss_enabled, t._entropy_bonus_enabled = False, False, False
    t.max_completion_length = max_len
    t.args = SimpleNamespace(delta=None, use_bias_correction_kl=False)
    t.model = SimpleNamespace(training=False)  # eval: no gradient-accumulation rescaling
    t.accelerator = _OneProcess()
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    t._get_per_token_logps_and_entropies = lambda *a, **k: (logp, torch.zeros_like(logp), None)
    B, T = logp.shape
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "num_items_in_batch": mask.sum(),
    }
    if ref is not None:
        inputs["ref_per_token_logps"] = ref
    return t._compute_loss(None, inputs), t._metrics["eval"]


def _inputs(seed, B=6, T=9):
    g = torch.Generator().manual_seed(seed)
    logp_base = -torch.rand(B, T, generator=g, dtype=torch.float64) * 4
    old = logp_base + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.8  # ratios well off 1
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).double()
    ref = logp_base + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    return logp_base, old, adv, mask, ref


CASES = [
    # (openm1 algo, openm1 options, TRL loss_type, TRL options)
    ("cispo", {"eps_high": 4.0}, "cispo", {"epsilon_low": 0.2, "epsilon_high": 5.0}),
    ("cispo", {"eps_high": 0.5}, "cispo", {"epsilon_low": 0.2, "epsilon_high": 1.5}),
    ("dapo", {}, "dapo", {"epsilon_low": 0.2, "epsilon_high": 0.28}),
    ("grpo", {}, "grpo", {"epsilon_low": 0.2, "epsilon_high": 0.2}),
    (
        "grpo",
        {"kl_coef": 0.04, "ref_logp": "ref"},
        "grpo",
        {"epsilon_low": 0.2, "epsilon_high": 0.2, "beta": 0.04},
    ),
    ("dr_grpo", {"max_len": 12}, "dr_grpo", {"epsilon_low": 0.2, "epsilon_high": 0.2, "max_len": 12}),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("algo,options,trl_type,trl_options", CASES)
def test_loss_and_gradient_match_trl(algo, options, trl_type, trl_options, seed):
    base, old, adv, mask, ref = _inputs(seed)
    options = {k: (ref if v == "ref" else v) for k, v in options.items()}
    if "beta" in trl_options:
        trl_options = {**trl_options, "ref": ref}

    ours_in = base.clone().requires_grad_()
    ours, metrics = policy_loss(algo, ours_in, old, adv, mask, **options)
    (g_ours,) = torch.autograd.grad(ours, ours_in)

    theirs_in = base.clone().requires_grad_()
    theirs, trl_metrics = trl_loss(trl_type, theirs_in, old, adv, mask, **trl_options)
    (g_theirs,) = torch.autograd.grad(theirs, theirs_in)

    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-10, atol=1e-12)
    if trl_type == "cispo":
        # TRL counts only A > 0 tokens above the cap; openm1's clip_frac/high counts all clipped weights
        r, a = torch.exp(base - old), adv[:, None].expand_as(base)
        trl_like = float((((r > trl_options["epsilon_high"]) & (a > 0)) * mask).sum() / mask.sum())
        assert trl_metrics["cispo_clip_ratio"][-1] == pytest.approx(trl_like)
        assert metrics["clip_frac/high"] >= trl_like
    elif trl_type in ("dapo", "grpo"):
        assert metrics["clip_frac"] == pytest.approx(trl_metrics["clip_ratio/region_mean"][-1])


def test_trl_cispo_with_its_default_epsilon_caps_every_weight_at_0_2():
    """The trap SPEC.md warns about: TRL's cispo with an unset epsilon_high (= epsilon = 0.2) caps the
    weight at 0.2, i.e. openm1's eps_high = -0.8, which openm1 refuses (negative)."""
    base, old, adv, mask, _ = _inputs(0)
    theirs_in = base.clone().requires_grad_()
    theirs, _ = trl_loss("cispo", theirs_in, old, adv, mask, epsilon_low=0.2, epsilon_high=0.2)
    (g,) = torch.autograd.grad(theirs, theirs_in)
    w = (-g * mask.sum() / adv[:, None])[mask > 0]
    assert w.max().item() <= 0.2 + 1e-12
