"""Tiny random configurations, and the same model in transformers' terms, for parity tests."""

from __future__ import annotations

import random

import torch

from openm1.config import FULL, LINEAR, ModelConfig


def random_config(seed: int, rotary_full: bool = True, **overrides) -> ModelConfig:
    """A small random hybrid configuration; ``rotary_full`` uses transformers' whole-head RoPE."""
    rng = random.Random(seed)
    heads = rng.choice([2, 4, 8])
    kv = rng.choice([k for k in (1, 2, 4, 8) if heads % k == 0])
    head_dim = rng.choice([8, 16, 32])
    layers = rng.choice([2, 3, 4, 8])
    pattern = rng.choice(["hybrid", "alternate", "random"])
    if pattern == "hybrid":
        types = [FULL if (i + 1) % 4 == 0 else LINEAR for i in range(layers)]
    elif pattern == "alternate":
        types = [FULL if i % 2 else LINEAR for i in range(layers)]
    else:
        types = [rng.choice([LINEAR, FULL]) for _ in range(layers)]
    if LINEAR not in types:
        types[0] = LINEAR
    if FULL not in types:
        types[-1] = FULL
    experts = rng.choice([2, 4, 8])
    fields = dict(
        vocab_size=rng.choice([64, 97, 128]),
        hidden_size=rng.choice([32, 48, 64]),
        num_hidden_layers=layers,
        layer_types=types,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        block_size=rng.choice([4, 8, 16]),
        rotary_dim=head_dim if rotary_full else head_dim // 2,
        rope_theta=rng.choice([10_000.0, 1e6, 1e7]),
        num_local_experts=experts,
        num_experts_per_tok=rng.choice([1, 2]) if experts > 2 else 2,
        intermediate_size=rng.choice([24, 40, 64]),
        linear_attn_alpha_factor=rng.uniform(0.5, 3.0),
        linear_attn_beta_factor=rng.uniform(0.5, 1.5),
        full_attn_alpha_factor=rng.uniform(0.5, 3.0),
        full_attn_beta_factor=rng.uniform(0.5, 1.5),
        mlp_alpha_factor=rng.uniform(0.5, 3.0),
        mlp_beta_factor=rng.uniform(0.5, 1.5),
        initializer_range=0.1,
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def hf_config(config: ModelConfig):
    """The transformers ``MiniMaxConfig`` describing the same model (whole-head RoPE)."""
    from transformers import MiniMaxConfig

    assert config.rotary_dim == config.head_dim, "transformers rotates the whole head"
    return MiniMaxConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        layer_types=list(config.layer_types),
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        block_size=config.block_size,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        num_local_experts=config.num_local_experts,
        num_experts_per_tok=config.num_experts_per_tok,
        rms_norm_eps=config.rms_norm_eps,
        tie_word_embeddings=config.tie_word_embeddings,
        linear_attn_alpha_factor=config.linear_attn_alpha_factor,
        linear_attn_beta_factor=config.linear_attn_beta_factor,
        full_attn_alpha_factor=config.full_attn_alpha_factor,
        full_attn_beta_factor=config.full_attn_beta_factor,
        mlp_alpha_factor=config.mlp_alpha_factor,
        mlp_beta_factor=config.mlp_beta_factor,
        attn_implementation="eager",
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()
