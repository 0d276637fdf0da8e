"""Small models and reference decoding loops for the generation tests."""

from __future__ import annotations

import torch

from openm1.model import MiniMaxM1ForCausalLM
from tests.model.helpers import random_config


def tiny_model(seed: int = 0, rotary_full: bool = False, **overrides) -> MiniMaxM1ForCausalLM:
    torch.manual_seed(seed)
    # A wider init than the default makes the random model's distributions peaked enough that greedy
    # choices are far from ties (so float differences between implementations cannot flip them).
    overrides.setdefault("initializer_range", 0.5)
    return MiniMaxM1ForCausalLM(random_config(seed, rotary_full=rotary_full, **overrides)).eval()


@torch.no_grad()
def greedy_alone(model: MiniMaxM1ForCausalLM, prompt: list[int], steps: int) -> list[int]:
    """The reference: one sequence, the model's simple growing cache, argmax each step."""
    cache = model.new_cache()
    out = model(torch.tensor([prompt], device=next(model.parameters()).device), cache=cache)
    tokens = []
    for _ in range(steps):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(int(nxt))
        out = model(nxt, cache=cache)
    return tokens


def random_prompts(vocab: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]
