"""Per-token log-probabilities (and entropies) of sampled tokens, from logits, in float32.

The trainer's ``logp``/``old_logp`` and the rollout's ``rollout_logp`` must be computed the same way:
the paper traced its training/inference probability mismatch to precision, so the log-softmax runs
in float32 whatever the logits' dtype. ``chunk`` bounds the memory of the ``[rows, vocab]`` float32
temporaries for long sequences and large vocabularies (M1's is 200,064).
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(
    logits: Tensor,
    tokens: Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk: int | None = 4096,
) -> tuple[Tensor, Tensor | None]:
    """``log softmax(logits / temperature)[token]`` per position (``[batch, time]``, float32), and the
    entropy of each position's distribution when ``with_entropy``.

    ``logits[:, t]`` must be the prediction of ``tokens[:, t]`` (shift them before calling)."""
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [batch, time, vocab] and tokens [batch, time], got {tuple(logits.shape)} and "
            f"{tuple(tokens.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    B, T, V = logits.shape
    flat, flat_tokens = logits.reshape(B * T, V), tokens.reshape(B * T)
    step = flat.shape[0] if not chunk else chunk
    logps, ents = [], []
    for start in range(0, flat.shape[0], max(step, 1)):
        x = flat[start : start + step].float()
        if temperature != 1.0:
            x = x / temperature
        lsm = torch.log_softmax(x, dim=-1)
        logps.append(lsm.gather(-1, flat_tokens[start : start + step, None])[:, 0])
        if with_entropy:
            ents.append(-(lsm.exp() * lsm).sum(-1))
    logp = torch.cat(logps).view(B, T)
    return logp, (torch.cat(ents).view(B, T) if with_entropy else None)
