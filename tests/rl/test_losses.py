"""The policy losses: hand-computed cases, CISPO's gradient, its relation to PPO and DAPO, validation."""

from __future__ import annotations

import math

import pytest
import torch

from openm1.rl.losses import ALGORITHMS, CISPO_EPS_HIGH, LossError, policy_loss

# Two sequences, the first with a padded last token. Ratios r are chosen, logp = log(r * p_old).
R = [[1.5, 0.5, 1.0], [1.1, 0.7, 3.0]]
P_OLD = [[0.2, 0.4, 0.5], [0.5, 0.25, 0.1]]
MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
ADV = [1.0, -2.0]
# logp of the five valid tokens, in order, and their (sequence) advantages
LOGP = [math.log(0.3), math.log(0.2), math.log(0.55), math.log(0.175), math.log(0.3)]
A_TOK = [1.0, 1.0, -2.0, -2.0, -2.0]


def case(dtype=torch.float64):
    old = torch.tensor(P_OLD, dtype=dtype).log()
    logp = (torch.tensor(R, dtype=dtype) * torch.tensor(P_OLD, dtype=dtype)).log().requires_grad_()
    return logp, old, torch.tensor(ADV, dtype=dtype), torch.tensor(MASK, dtype=dtype)


# Per-token PPO terms -min(rA, clip(r)A) worked out by hand for eps 0.2/0.2:
# seq 0 (A=1): r=1.5 -> -1.2 (clipped), r=0.5 -> -0.5;
# seq 1 (A=-2): r=1.1 -> 2.2, r=0.7 -> 1.6 (clipped), r=3 -> 6.
PPO_TERMS = [-1.2, -0.5, 2.2, 1.6, 6.0]


@pytest.mark.parametrize(
    "algo,options,expected",
    [
        ("ppo", {}, sum(PPO_TERMS) / 5),
        # clip-higher 0.28: the first token's weight is 1.28 instead of 1.2
        ("dapo", {}, (-1.28 - 0.5 + 2.2 + 1.6 + 6.0) / 5),
        # per sequence, then over the two sequences
        ("grpo", {}, ((-1.2 - 0.5) / 2 + (2.2 + 1.6 + 6.0) / 3) / 2),
        # constant denominator batch * time = 2 * 3, or batch * max_len
        ("dr_grpo", {}, sum(PPO_TERMS) / 6),
        ("dr_grpo", {"max_len": 10}, sum(PPO_TERMS) / 20),
        ("ppo", {"normalizer": 10.0}, sum(PPO_TERMS) / 10),
        # CISPO: weights clip(r, -inf, 1.2) = 1.2, 0.5, 1.1, 0.7, 1.2 times A times logp
        (
            "cispo",
            {"eps_high": 0.2},
            -sum(w * a * lp for w, a, lp in zip([1.2, 0.5, 1.1, 0.7, 1.2], A_TOK, LOGP, strict=True)) / 5,
        ),
        # the unified form with eps 0.2/0.2: tokens 0 (A>0, r>1.2) and 3 (A<0, r<0.8) masked; 0.5 -> 0.8
        (
            "cispo",
            {"eps_low": 0.2, "eps_high": 0.2, "mask_trust_region": True},
            -sum(w * a * lp for w, a, lp in zip([0.0, 0.8, 1.1, 0.0, 1.2], A_TOK, LOGP, strict=True)) / 5,
        ),
    ],
)
def test_loss_matches_hand_computation(algo, options, expected):
    logp, old, adv, mask = case()
    loss, metrics = policy_loss(algo, logp, old, adv, mask, **options)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-9)


def test_grpo_kl_is_k3_added_per_token_before_the_sequence_mean():
    logp, old, adv, mask = case()
    ref = torch.tensor([[0.25, 0.25, 0.5], [0.5, 0.2, 0.2]], dtype=torch.float64).log()
    ref_valid = [0.25, 0.25, 0.5, 0.2, 0.2]
    kl = [math.exp(math.log(q) - lp) - (math.log(q) - lp) - 1 for q, lp in zip(ref_valid, LOGP, strict=True)]
    terms = [t + 0.1 * k for t, k in zip(PPO_TERMS, kl, strict=True)]
    expected = (sum(terms[:2]) / 2 + sum(terms[2:]) / 3) / 2
    loss, metrics = policy_loss("grpo", logp, old, adv, mask, ref_logp=ref, kl_coef=0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert metrics["kl_ref"] == pytest.approx(sum(kl) / 5, rel=1e-9)


def test_truncated_importance_sampling_scales_each_token_by_the_capped_weight():
    logp, old, adv, mask = case()
    # rollout engine's probabilities: old/rollout = 2, 1, _, 4 (capped to 3), 0.5, 1
    rollout = old - torch.tensor(
        [[math.log(2), 0.0, 0.0], [math.log(4), math.log(0.5), 0.0]], dtype=torch.float64
    )
    loss, m = policy_loss("dapo", logp, old, adv, mask, rollout_logp=rollout, tis_cap=3.0)
    dapo_terms = [-1.28, -0.5, 2.2, 1.6, 6.0]
    expected = sum(t * w for t, w in zip(dapo_terms, [2.0, 1.0, 3.0, 0.5, 1.0], strict=True)) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert m["tis/clip_frac"] == pytest.approx(1 / 5)
    assert m["tis/weight_mean"] == pytest.approx((2 + 1 + 3 + 0.5 + 1) / 5)


def test_metrics_by_hand():
    logp, old, adv, mask = case()
    entropy = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]], dtype=torch.float64)
    _, ppo = policy_loss("ppo", logp, old, adv, mask, entropy=entropy)
    # PPO zeroes token 0 (A>0, r=1.5>1.2) and token 3 (A<0, r=0.7<0.8)
    assert ppo["clip_frac"] == pytest.approx(2 / 5)
    assert ppo["clip_frac/high"] == pytest.approx(1 / 5) and ppo["clip_frac/low"] == pytest.approx(1 / 5)
    assert ppo["zero_grad_frac"] == pytest.approx(2 / 5)
    assert ppo["is_weight/max"] == pytest.approx(3.0) and ppo["is_weight/min"] == pytest.approx(0.5)
    assert ppo["is_weight/mean"] == pytest.approx((1.5 + 0.5 + 1.1 + 0.7 + 3.0) / 5)
    assert ppo["entropy"] == pytest.approx(3.0)  # the padded 100 is ignored
    rs = [1.5, 0.5, 1.1, 0.7, 3.0]
    assert ppo["approx_kl"] == pytest.approx(sum(r - 1 - math.log(r) for r in rs) / 5)
    _, cispo = policy_loss("cispo", logp, old, adv, mask, eps_high=0.2)
    # CISPO clips the weights of r=1.5 and r=3.0 (whatever A's sign), drops no gradient
    assert cispo["clip_frac"] == pytest.approx(2 / 5) and cispo["clip_frac/high"] == pytest.approx(2 / 5)
    assert cispo["clip_frac/low"] == 0.0 and cispo["zero_grad_frac"] == 0.0


def _random_batch(B=4, T=7, V=11, spread=0.7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).double()
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    with torch.no_grad():
        old = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
        old = old + spread * torch.randn(B, T, generator=g, dtype=torch.float64)
    return logits, tokens, old, adv, mask


def _logp(logits, tokens):
    return torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cispo_gradient_is_stopped_clipped_weight_times_advantage_times_grad_logp(seed):
    logits, tokens, old, adv, mask = _random_batch(seed=seed)
    eps_high = 0.3
    loss, _ = policy_loss("cispo", _logp(logits, tokens), old, adv, mask, eps_high=eps_high)
    (grad,) = torch.autograd.grad(loss, logits)
    # By hand: d(-J)/dlogits = -1/N sum_t w_t A_t (onehot(o_t) - softmax(logits_t)), w = clip(r, max=1+eps)
    with torch.no_grad():
        w = torch.exp(_logp(logits, tokens) - old).clamp(max=1 + eps_high)
        dlogp = torch.nn.functional.one_hot(tokens, logits.shape[-1]).double() - torch.softmax(logits, -1)
        expected = -(w * adv[:, None] * mask)[..., None] * dlogp / mask.sum()
    assert (w > 1 + eps_high - 1e-12).any()  # some weights were clipped
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_tokens_ppo_clips_still_get_cispo_gradient():
    logits, tokens, old, adv, mask = _random_batch(spread=1.5)
    logp = _logp(logits, tokens).detach().requires_grad_()
    r = torch.exp(logp - old)
    a = adv[:, None].expand_as(r)
    clipped = (((a > 0) & (r > 1.2)) | ((a < 0) & (r < 0.8))) & (mask > 0)
    assert clipped.sum() >= 3
    ppo_loss, _ = policy_loss("ppo", logp, old, adv, mask)
    (g_ppo,) = torch.autograd.grad(ppo_loss, logp)
    cispo_loss, _ = policy_loss("cispo", logp, old, adv, mask, eps_high=0.2)
    (g_cispo,) = torch.autograd.grad(cispo_loss, logp)
    assert torch.all(g_ppo[clipped] == 0)
    assert torch.all(g_cispo[clipped] != 0)
    # ... and exactly with the weight clipped: -clip(r) A / N
    expected = -(r.clamp(max=1.2) * a)[clipped] / mask.sum()
    torch.testing.assert_close(g_cispo[clipped], expected)
    # the unified form's trust-region mask drops exactly the tokens PPO drops
    masked_loss, m = policy_loss(
        "cispo", logp, old, adv, mask, eps_low=0.2, eps_high=0.2, mask_trust_region=True
    )
    (g_masked,) = torch.autograd.grad(masked_loss, logp)
    assert torch.equal(g_masked == 0, (g_ppo == 0))
    assert m["zero_grad_frac"] == pytest.approx(float(clipped.sum() / mask.sum()))


@pytest.mark.parametrize("seed", [0, 1])
def test_on_policy_cispo_and_dapo_gradients_are_equal(seed):
    logits, tokens, _, adv, mask = _random_batch(seed=seed)
    grads = {}
    for algo in ("cispo", "dapo"):
        logp = _logp(logits, tokens)
        loss, m = policy_loss(algo, logp, logp.detach(), adv, mask)
        (grads[algo],) = torch.autograd.grad(loss, logits)
        assert m["clip_frac"] == 0.0 and m["is_weight/max"] == pytest.approx(1.0)
    torch.testing.assert_close(grads["cispo"], grads["dapo"], rtol=1e-12, atol=1e-14)
    # both equal A * grad log pi / N
    with torch.no_grad():
        dlogp = torch.nn.functional.one_hot(tokens, logits.shape[-1]).double() - torch.softmax(logits, -1)
        expected = -(adv[:, None] * mask)[..., None] * dlogp / mask.sum()
    torch.testing.assert_close(grads["cispo"], expected)


@pytest.mark.parametrize("algo", ["cispo", "dapo", "ppo"])
def test_micro_batches_with_the_group_normalizer_accumulate_to_the_full_batch_gradient(algo):
    logits, tokens, old, adv, mask = _random_batch()
    full, _ = policy_loss(algo, _logp(logits, tokens), old, adv, mask)
    (g_full,) = torch.autograd.grad(full, logits)
    total = float(mask.sum())
    acc = torch.zeros_like(logits)
    for sl in (slice(0, 1), slice(1, 4)):
        part, _ = policy_loss(
            algo, _logp(logits[sl], tokens[sl]), old[sl], adv[sl], mask[sl], normalizer=total
        )
        (g,) = torch.autograd.grad(part, logits)
        acc += g
    torch.testing.assert_close(acc, g_full)


def test_cispo_defaults_lower_bound_off_and_documented_cap():
    assert ALGORITHMS["cispo"].eps_low is None and ALGORITHMS["cispo"].eps_high == CISPO_EPS_HIGH == 4.0
    assert (ALGORITHMS["dapo"].eps_low, ALGORITHMS["dapo"].eps_high) == (0.2, 0.28)
    logp = torch.tensor([[math.log(0.01)]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[math.log(0.9)]], dtype=torch.float64)  # r = 0.011: far below any lower bound
    loss, m = policy_loss("cispo", logp, old, torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 1))
    (g,) = torch.autograd.grad(loss, logp)
    assert g.item() == pytest.approx(-0.01 / 0.9)  # the weight is not raised to a lower bound
    assert m["clip_frac"] == 0.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda t: policy_loss("reinforce", *t), "valid: cispo, grpo, dapo, ppo, dr_grpo"),
        (lambda t: policy_loss("dapo", *t, eps_high=-0.1), "eps_high must be a non-negative"),
        (lambda t: policy_loss("ppo", *t, eps_low=float("nan")), "eps_low must be a non-negative"),
        (lambda t: policy_loss("grpo", *t, eps_low=None), "only cispo may leave a bound off"),
        (lambda t: policy_loss("dapo", *t, kl_coef=0.1), r"does not take option\(s\) \['kl_coef'\]"),
        (lambda t: policy_loss("grpo", *t, kl_coef=0.1), "needs ref_logp"),
        (lambda t: policy_loss("cispo", t[0], t[1][:, :2], t[2], t[3]), "old_logp has shape"),
        (lambda t: policy_loss("cispo", t[0], t[1], t[2][:1], t[3]), "advantages has shape"),
        (lambda t: policy_loss("cispo", t[0], t[1], t[2], t[3][0]), "mask has shape"),
        (lambda t: policy_loss("cispo", t[0][0], t[1][0], t[2], t[3][0]), r"logp must be \[batch, time\]"),
        (lambda t: policy_loss("cispo", *t, rollout_logp=t[1][:1]), "rollout_logp has shape"),
        (lambda t: policy_loss("cispo", *t, rollout_logp=t[1], tis_cap=0), "tis_cap must be positive"),
        (lambda t: policy_loss("cispo", *t, normalizer=0), "normalizer must be positive"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(call, match):
    with pytest.raises(LossError, match=match):
        call(case())


def test_per_token_advantages_are_accepted():
    logp, old, adv, mask = case()
    a, _ = policy_loss("cispo", logp, old, adv, mask)
    b, _ = policy_loss("cispo", logp, old, adv[:, None].expand(2, 3).clone(), mask)
    c, _ = policy_loss("cispo", logp, old, adv[:, None], mask)
    assert a.item() == pytest.approx(b.item()) == pytest.approx(c.item())


def test_half_precision_log_probs_are_upcast():
    logp, old, adv, mask = case(torch.float32)
    low = logp.detach().bfloat16().requires_grad_()
    loss, _ = policy_loss("cispo", low, old.bfloat16(), adv, mask, eps_high=0.2)
    assert loss.dtype == torch.float32
    loss.backward()
    assert low.grad is not None and low.grad.dtype == torch.bfloat16
