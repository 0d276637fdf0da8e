"""Exact parameter counts and per-sequence cache memory of a :class:`~openm1.config.ModelConfig`.

Computed from the shapes alone (no tensors), so the 456B release is as instant as ``tiny``. The shapes
are those of the release and of transformers' ``minimax`` model; nothing has a bias:

* lightning layer: ``qkv_proj`` hidden -> 3HD, ``output_gate`` hidden -> HD, ``out_proj`` HD -> hidden,
  output RMSNorm weight HD;
* softmax layer: ``q_proj`` hidden -> HD, ``k_proj`` / ``v_proj`` hidden -> KV*D, ``o_proj`` HD -> hidden;
* MoE (every layer): router hidden -> E; per expert ``w1`` (gate) and ``w3`` (up) hidden -> I, ``w2``
  (down) I -> hidden;
* per layer ``input_layernorm`` and ``post_attention_layernorm`` (hidden each), a final norm, the
  embedding (vocab x hidden) and the LM head (vocab x hidden, none extra when tied).

**Active parameters** are those one token multiplies: top-k of the experts and everything else. The
paper's 45.9B *excludes* the embedding and LM-head matrices (an embedding is a row lookup; the head is
counted apart); :attr:`ParamCounts.active` follows that convention and
:attr:`ParamCounts.active_with_embeddings` adds both matrices back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from openm1.analysis.units import dtype_bytes
from openm1.config import ModelConfig

#: The paper's headline figures (arXiv 2506.13585): total and active (no embedding / LM head) parameters.
PAPER_TOTAL_PARAMS = 456e9
PAPER_ACTIVE_PARAMS = 45.9e9

#: The lightning state is float32 whatever the activations' dtype (the release and vLLM keep it so).
LIGHTNING_STATE_BYTES = 4


@dataclass(frozen=True)
class ParamCounts:
    """Parameters per component, summed over all layers (each field an exact integer count)."""

    embed: int
    lm_head: int
    lightning_qkv: int
    lightning_gate: int
    lightning_out: int
    lightning_norm: int
    softmax_q: int
    softmax_k: int
    softmax_v: int
    softmax_o: int
    router: int
    experts: int
    layer_norms: int
    final_norm: int
    experts_active: int
    """Parameters of the top-k experts one token runs through, over all layers."""

    @property
    def lightning(self) -> int:
        return self.lightning_qkv + self.lightning_gate + self.lightning_out + self.lightning_norm

    @property
    def softmax(self) -> int:
        return self.softmax_q + self.softmax_k + self.softmax_v + self.softmax_o

    @property
    def embeddings(self) -> int:
        """The embedding and LM-head matrices together (the head is 0 when tied)."""
        return self.embed + self.lm_head

    @property
    def total(self) -> int:
        return sum(self.components().values())

    @property
    def total_without_embeddings(self) -> int:
        return self.total - self.embeddings

    @property
    def active(self) -> int:
        """Per token, the paper's convention: everything but the idle experts, the embedding and the head."""
        return self.total_without_embeddings - self.experts + self.experts_active

    @property
    def active_with_embeddings(self) -> int:
        """Per token, counting the embedding and LM-head matrices too."""
        return self.active + self.embeddings

    @property
    def active_matmul(self) -> int:
        """Active parameters that take part in a matrix product (norm weights are elementwise), no head."""
        return self.active - self.lightning_norm - self.layer_norms - self.final_norm

    def components(self) -> dict[str, int]:
        """Every component with its count, in a fixed order (the counted fields, not derived sums)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "experts_active"}

    def to_dict(self) -> dict[str, int]:
        """Components plus the totals, as plain integers (for ``--json``)."""
        return {
            **self.components(),
            "experts_active": self.experts_active,
            "lightning": self.lightning,
            "softmax": self.softmax,
            "total": self.total,
            "total_without_embeddings": self.total_without_embeddings,
            "active": self.active,
            "active_with_embeddings": self.active_with_embeddings,
        }


def count_params(config: ModelConfig) -> ParamCounts:
    """Exact parameter counts of ``config`` per component (see the module docstring for the shapes)."""
    h, heads, kv, d = (
        config.hidden_size,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
    )
    n_lin, n_soft, n_layers = config.num_lightning_layers, config.num_softmax_layers, config.num_hidden_layers
    hd = heads * d
    per_expert = 3 * h * config.intermediate_size
    embed = config.vocab_size * h
    return ParamCounts(
        embed=embed,
        lm_head=0 if config.tie_word_embeddings else embed,
        lightning_qkv=n_lin * h * 3 * hd,
        lightning_gate=n_lin * h * hd,
        lightning_out=n_lin * hd * h,
        lightning_norm=n_lin * hd,
        softmax_q=n_soft * h * hd,
        softmax_k=n_soft * h * kv * d,
        softmax_v=n_soft * h * kv * d,
        softmax_o=n_soft * hd * h,
        router=n_layers * h * config.num_local_experts,
        experts=n_layers * config.num_local_experts * per_expert,
        layer_norms=n_layers * 2 * h,
        final_norm=h,
        experts_active=n_layers * config.num_experts_per_tok * per_expert,
    )


@dataclass(frozen=True)
class SequenceMemory:
    """Cache memory one sequence needs at a context length: what makes long context affordable."""

    context: int
    dtype: str
    lightning_state_bytes: int
    """Recurrent state of the lightning layers: L_lin x H x D x D in float32, independent of length."""
    softmax_kv_bytes: int
    """K and V of the softmax layers: L_soft x 2 x KV x D x T in ``dtype``."""
    pure_softmax_kv_bytes: int
    """The KV cache of the same shape with every layer softmax (same KV heads): the baseline."""

    @property
    def total_bytes(self) -> int:
        return self.lightning_state_bytes + self.softmax_kv_bytes

    @property
    def saving_factor(self) -> float:
        """How many times less memory than the pure-softmax model of the same shape."""
        return self.pure_softmax_kv_bytes / self.total_bytes

    def to_dict(self) -> dict[str, int | float | str]:
        return {
            "context": self.context,
            "dtype": self.dtype,
            "lightning_state_bytes": self.lightning_state_bytes,
            "softmax_kv_bytes": self.softmax_kv_bytes,
            "total_bytes": self.total_bytes,
            "pure_softmax_kv_bytes": self.pure_softmax_kv_bytes,
            "saving_factor": self.saving_factor,
        }


def sequence_memory(config: ModelConfig, context: int, dtype: str = "bf16") -> SequenceMemory:
    """Per-sequence cache bytes at ``context`` tokens with the KV cache in ``dtype``.

    M1 at 1M tokens in bf16: KV 40 GiB, lightning state 280 MiB; a pure-softmax model 320 GiB.
    """
    if context <= 0:
        raise ValueError(f"context must be a positive number of tokens, got {context}")
    nbytes = dtype_bytes(dtype)
    heads, kv, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    kv_per_layer = 2 * kv * d * context * nbytes
    return SequenceMemory(
        context=context,
        dtype=dtype,
        lightning_state_bytes=config.num_lightning_layers * heads * d * d * LIGHTNING_STATE_BYTES,
        softmax_kv_bytes=config.num_softmax_layers * kv_per_layer,
        pure_softmax_kv_bytes=config.num_hidden_layers * kv_per_layer,
    )
