"""A very small hybrid model (lightning + softmax layers, MoE) for fast trainer tests."""

from __future__ import annotations

import random

import torch

from openm1.config import ModelConfig, hybrid_layer_types
from openm1.model import MiniMaxM1ForCausalLM
from openm1.train import Example


def small_model(seed: int = 0) -> MiniMaxM1ForCausalLM:
    config = ModelConfig(
        vocab_size=48,
        hidden_size=32,
        num_hidden_layers=2,
        layer_types=hybrid_layer_types(2, softmax_every=2),
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        block_size=8,
        rotary_dim=8,
        rope_theta=10_000.0,
        max_position_embeddings=512,
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=32,
        linear_attn_alpha_factor=1.0,
        full_attn_alpha_factor=1.0,
        mlp_alpha_factor=1.0,
    )
    torch.manual_seed(seed)
    return MiniMaxM1ForCausalLM(config)


def documents(n: int, seed: int = 0, lo: int = 5, hi: int = 20, vocab: int = 48) -> list[Example]:
    rng = random.Random(seed)
    return [Example.document([rng.randrange(vocab) for _ in range(rng.randint(lo, hi))]) for _ in range(n)]


def pattern_documents(n: int, seed: int = 0) -> list[Example]:
    """Learnable text: counting runs ``a, a+1, a+2, ...`` modulo 40."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start, length = rng.randrange(40), rng.randint(8, 16)
        out.append(Example.document([(start + i) % 40 for i in range(length)]))
    return out
