"""Parameter counts and cache memory: the paper's figures, and exact agreement with a real model."""

from __future__ import annotations

import pytest
import torch

from openm1.analysis.params import count_params, sequence_memory
from openm1.analysis.units import format_bytes, parse_count, parse_counts
from openm1.config import FULL, LINEAR, ModelConfig, preset

GiB, MiB = 1024**3, 1024**2


def test_m1_matches_spec_components():
    p = count_params(preset("minimax-m1"))
    assert p.experts == 80 * 32 * 3 * 6144 * 9216
    assert p.lightning_qkv + p.lightning_gate + p.lightning_out == 70 * (
        6144 * 24576 + 6144 * 8192 + 8192 * 6144
    )
    assert p.softmax == 10 * (6144 * 8192 * 2 + 6144 * 1024 * 2)
    assert p.embeddings == 2 * 200064 * 6144
    assert p.experts_active == 80 * 2 * 3 * 6144 * 9216
    assert p.total == pytest.approx(456e9, rel=0.01)
    assert p.active == pytest.approx(45.9e9, rel=0.01)
    assert p.active_with_embeddings == p.active + 2 * 200064 * 6144


def test_tied_head_counts_once():
    c = preset("tiny").replace(tie_word_embeddings=True)
    p = count_params(c)
    assert p.lm_head == 0
    assert p.embeddings == c.vocab_size * c.hidden_size


def test_m1_memory_at_1m_tokens():
    m = sequence_memory(preset("minimax-m1"), parse_count("1M"), "bf16")
    assert m.softmax_kv_bytes == 40 * GiB
    assert m.lightning_state_bytes == 280 * MiB
    assert m.pure_softmax_kv_bytes == 320 * GiB
    assert m.total_bytes == 40 * GiB + 280 * MiB
    assert m.saving_factor == pytest.approx(320 * GiB / (40 * GiB + 280 * MiB))
    assert format_bytes(m.softmax_kv_bytes) == "40.00 GiB"


def test_memory_scales_with_length_and_dtype_but_state_does_not():
    c = preset("minimax-m1")
    short, long = sequence_memory(c, 1024, "bf16"), sequence_memory(c, 4096, "fp32")
    assert long.lightning_state_bytes == short.lightning_state_bytes
    assert long.softmax_kv_bytes == short.softmax_kv_bytes * 4 * 2
    with pytest.raises(ValueError, match="unknown dtype"):
        sequence_memory(c, 1024, "fp12")


def test_parse_counts():
    assert parse_count("1048576") == parse_count("1M") == parse_count("1024K") == 1048576
    assert parse_count("100k") == 102400
    assert parse_counts("1K, 64K,100K") == [1024, 65536, 102400]
    for bad in ("abc", "0", "-5", "1.0001K", ""):
        with pytest.raises(ValueError):
            parse_count(bad)


# --------------------------------------------------------------------- against a real model
def _component(name: str) -> str:
    """Map a transformers ``minimax`` parameter name to an openm1 component."""
    table = [
        ("embed_tokens", "embed"),
        ("lm_head", "lm_head"),
        ("qkv_proj", "lightning_qkv"),
        ("output_gate", "lightning_gate"),
        ("out_proj", "lightning_out"),
        ("self_attn.norm", "lightning_norm"),
        ("q_proj", "softmax_q"),
        ("k_proj", "softmax_k"),
        ("v_proj", "softmax_v"),
        ("o_proj", "softmax_o"),
        ("mlp.gate.", "router"),
        ("experts", "experts"),
        ("layernorm", "layer_norms"),
        ("model.norm", "final_norm"),
    ]
    for key, component in table:
        if key in name:
            return component
    raise AssertionError(f"unmapped parameter {name}")


def _transformers_counts(c: ModelConfig) -> dict[str, int]:
    transformers = pytest.importorskip("transformers")
    hf = transformers.MiniMaxConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        num_local_experts=c.num_local_experts,
        num_experts_per_tok=c.num_experts_per_tok,
        layer_types=list(c.layer_types),
        tie_word_embeddings=c.tie_word_embeddings,
    )
    with torch.device("meta"):
        model = transformers.MiniMaxForCausalLM(hf)
    counts: dict[str, int] = {}
    for name, param in model.named_parameters():  # deduplicates a tied head; buffers are not included
        key = _component(name)
        counts[key] = counts.get(key, 0) + param.numel()
    return counts


@pytest.mark.parametrize(
    "config",
    [
        preset("tiny"),
        preset("tiny").replace(tie_word_embeddings=True),
        preset("tiny").replace(
            num_hidden_layers=3,
            layer_types=[LINEAR, FULL, LINEAR],
            num_key_value_heads=1,
            num_experts_per_tok=1,
            vocab_size=97,
        ),
    ],
    ids=["tiny", "tiny-tied", "tiny-variant"],
)
def test_components_equal_transformers_numel(config: ModelConfig):
    ours = count_params(config)
    theirs = _transformers_counts(config)
    expected = {k: v for k, v in ours.components().items() if v}
    assert theirs == expected
    assert sum(theirs.values()) == ours.total
