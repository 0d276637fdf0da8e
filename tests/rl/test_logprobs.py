"""Token log-probs and entropies against torch.distributions, in float32 whatever the input dtype."""

from __future__ import annotations

import pytest
import torch

from openm1.rl.logprobs import token_logprobs


@pytest.mark.parametrize("chunk", [None, 5])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_categorical(chunk, temperature):
    logits = torch.randn(3, 7, 13, dtype=torch.bfloat16, requires_grad=True)
    tokens = torch.randint(0, 13, (3, 7))
    logp, ent = token_logprobs(logits, tokens, temperature, with_entropy=True, chunk=chunk)
    assert logp.dtype == torch.float32 and logp.shape == (3, 7)
    dist = torch.distributions.Categorical(logits=logits.float() / temperature)
    torch.testing.assert_close(logp, dist.log_prob(tokens))
    torch.testing.assert_close(ent, dist.entropy())
    logp.sum().backward()  # differentiable back to the (bf16) logits
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16


def test_bad_shapes():
    with pytest.raises(ValueError, match="expected logits"):
        token_logprobs(torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), temperature=0)
