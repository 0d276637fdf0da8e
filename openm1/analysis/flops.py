"""Theoretical inference FLOPs to generate N tokens: MiniMax-M1 against DeepSeek-R1 (the paper's Figure 1).

Every generated token costs a constant (2 FLOPs per multiply-add over the active matmul parameters,
the LM head, and for lightning layers the ``[D, D]`` state update and readout) plus a term linear in the
number of positions it attends to (softmax / MLA scores and values). Summing over the generation gives
``A N + B (sum of attended positions)``. What the sum is, and how MLA is counted, are *conventions*; the
paper does not state them, so :data:`CONVENTIONS` names the four combinations and ``docs/flops.md``
writes the formulas out and shows which one reproduces the paper's claims (M1 < 50% of R1 at 64K
generated tokens, about 25% at 100K): ``unabsorbed-square``, the default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from openm1.analysis.params import count_params
from openm1.config import ModelConfig, preset

K = 1024
#: The lengths of the paper's claims (binary K, like the context windows they are quoted beside).
CLAIM_64K, CLAIM_100K = 64 * K, 100 * K
DEFAULT_LENGTHS = tuple(n * K for n in (1, 4, 8, 16, 32, 64, 80, 100, 128))


@dataclass(frozen=True)
class DeepSeekR1:
    """DeepSeek-R1 (= DeepSeek-V3's architecture) as its published config.json describes it.

    61 layers: the first 3 with a dense SwiGLU FFN, the other 58 MoE (256 routed experts, 8 active, plus 1
    shared expert); Multi-head Latent Attention with 128 heads. About 37B active parameters. The
    multi-token-prediction module is not used for ordinary decoding and is left out.
    """

    num_layers: int = 61
    num_dense_layers: int = 3
    hidden_size: int = 7168
    dense_intermediate_size: int = 18432
    moe_intermediate_size: int = 2048
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_experts_per_tok: int = 8
    num_heads: int = 128
    q_lora_rank: int = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    vocab_size: int = 129280

    @property
    def mla_params(self) -> int:
        """One MLA layer's projections: q down/up, joint kv down (+ the rope key), kv up, output."""
        h, n = self.hidden_size, self.num_heads
        q_head = self.qk_nope_head_dim + self.qk_rope_head_dim
        return (
            h * self.q_lora_rank  # q_a_proj
            + self.q_lora_rank * n * q_head  # q_b_proj
            + h * (self.kv_lora_rank + self.qk_rope_head_dim)  # kv_a_proj_with_mqa
            + self.kv_lora_rank * n * (self.qk_nope_head_dim + self.v_head_dim)  # kv_b_proj
            + n * self.v_head_dim * h  # o_proj
        )

    @property
    def active_matmul_params(self) -> int:
        """Matmul parameters one token runs through, without the embedding and the LM head."""
        h = self.hidden_size
        n_moe = self.num_layers - self.num_dense_layers
        dense_ffn = self.num_dense_layers * 3 * h * self.dense_intermediate_size
        experts = (self.num_experts_per_tok + self.n_shared_experts) * 3 * h * self.moe_intermediate_size
        routers = h * self.n_routed_experts
        return self.num_layers * self.mla_params + dense_ffn + n_moe * (experts + routers)

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size


@dataclass(frozen=True)
class Convention:
    """How the attention term is counted (the rest, 2 FLOPs per active matmul parameter, is common)."""

    name: str
    mla: str
    """``unabsorbed``: per head 192-dim scores and 128-dim values over decompressed K/V;
    ``absorbed``: scores over the 512 + 64 latent dims and values over the 512 latent dims (decoding form)."""
    span: str
    """``square``: each of the N generated tokens is charged the full window of N positions (Megatron's
    s^2 accounting, no causal discount; equal to N x the cost of the last token); ``causal``: token t
    attends to t positions, so the window sums to N(N+1)/2."""
    lm_head: bool = True
    """Count the LM head (2 x vocab x hidden per token) in both models."""

    def describe(self) -> str:
        head = "with" if self.lm_head else "without"
        return f"{self.name}: MLA {self.mla}, {self.span} attention span, {head} the LM head"


CONVENTIONS = {
    f"{mla}-{span}": Convention(f"{mla}-{span}", mla, span)
    for mla in ("unabsorbed", "absorbed")
    for span in ("square", "causal")
}
#: The convention that reproduces the paper's Figure 1 claims (docs/flops.md says why).
DEFAULT_CONVENTION = "unabsorbed-square"


def get_convention(name: str, lm_head: bool = True) -> Convention:
    """A named convention (``paper`` is an alias of the default), optionally without the LM head."""
    key = DEFAULT_CONVENTION if name == "paper" else name
    try:
        conv = CONVENTIONS[key]
    except KeyError:
        raise ValueError(f"unknown convention {name!r}; choose one of {['paper', *CONVENTIONS]}") from None
    return Convention(conv.name, conv.mla, conv.span, lm_head)


@dataclass(frozen=True)
class TokenCost:
    """FLOPs of one generated token that attends to ``p`` positions: ``constant + per_position * p``."""

    linear: float
    """2 x the active matmul parameters (no LM head)."""
    lm_head: float
    """2 x vocab x hidden, or 0 when the convention leaves the head out."""
    recurrent: float
    """Lightning layers: state update ``k^T v`` and readout ``q S``, 2 x 2 x H x D x D per layer."""
    per_position: float
    """Attention FLOPs per attended position, over all layers that attend."""

    @property
    def constant(self) -> float:
        return self.linear + self.lm_head + self.recurrent

    def at(self, positions: int) -> float:
        return self.constant + self.per_position * positions


def m1_token_cost(config: ModelConfig | None = None, convention: Convention | None = None) -> TokenCost:
    """Per-token cost of a MiniMax-M1-shaped config (default: the release)."""
    config = config or preset("minimax-m1")
    convention = convention or get_convention(DEFAULT_CONVENTION)
    p = count_params(config)
    heads, d = config.num_attention_heads, config.head_dim
    return TokenCost(
        linear=2.0 * p.active_matmul,
        lm_head=2.0 * config.vocab_size * config.hidden_size if convention.lm_head else 0.0,
        recurrent=config.num_lightning_layers * 2 * 2 * heads * d * d,
        # softmax layers: scores q.k and the weighted sum of v, 2 FLOPs per multiply-add each
        per_position=config.num_softmax_layers * 2 * 2 * heads * d,
    )


def r1_token_cost(r1: DeepSeekR1 | None = None, convention: Convention | None = None) -> TokenCost:
    """Per-token cost of DeepSeek-R1 under a convention for MLA.

    The linear term is the same in both MLA forms: absorbing ``W_UK`` / ``W_UV`` into the query and the
    output costs one token exactly what decompressing that token's latent costs (the same matrices).
    """
    r1 = r1 or DeepSeekR1()
    convention = convention or get_convention(DEFAULT_CONVENTION)
    n = r1.num_heads
    if convention.mla == "unabsorbed":
        per_layer = 2 * n * (r1.qk_nope_head_dim + r1.qk_rope_head_dim) + 2 * n * r1.v_head_dim
    elif convention.mla == "absorbed":
        per_layer = 2 * n * (r1.kv_lora_rank + r1.qk_rope_head_dim) + 2 * n * r1.kv_lora_rank
    else:
        raise ValueError(f"MLA form must be 'unabsorbed' or 'absorbed', got {convention.mla!r}")
    return TokenCost(
        linear=2.0 * r1.active_matmul_params,
        lm_head=2.0 * r1.lm_head_params if convention.lm_head else 0.0,
        recurrent=0.0,
        per_position=float(r1.num_layers * per_layer),
    )


def generation_flops(cost: TokenCost, n: int, span: str, prompt: int = 0) -> float:
    """FLOPs to generate ``n`` tokens after a ``prompt`` (the prompt's own prefill is not counted).

    causal: sum over t = 1..n of cost.at(prompt + t) = C n + B (prompt n + n (n + 1) / 2);
    square: n x cost.at(prompt + n) = C n + B n (prompt + n).
    """
    if span == "causal":
        positions = prompt * n + n * (n + 1) / 2
    elif span == "square":
        positions = n * (prompt + n)
    else:
        raise ValueError(f"attention span must be 'causal' or 'square', got {span!r}")
    return cost.constant * n + cost.per_position * positions


@dataclass(frozen=True)
class Row:
    length: int
    m1_flops: float
    r1_flops: float

    @property
    def ratio(self) -> float:
        return self.m1_flops / self.r1_flops

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "ratio": self.ratio}


def compare(
    lengths: tuple[int, ...] | list[int] = DEFAULT_LENGTHS,
    convention: Convention | None = None,
    prompt: int = 0,
    config: ModelConfig | None = None,
    r1: DeepSeekR1 | None = None,
) -> list[Row]:
    """Cumulative FLOPs of M1 and R1 at each generation length under one convention."""
    convention = convention or get_convention(DEFAULT_CONVENTION)
    m1, ds = m1_token_cost(config, convention), r1_token_cost(r1, convention)
    return [
        Row(
            n,
            generation_flops(m1, n, convention.span, prompt),
            generation_flops(ds, n, convention.span, prompt),
        )
        for n in lengths
    ]


def ratio(n: int, convention: Convention | None = None, prompt: int = 0) -> float:
    """M1 / R1 FLOPs to generate ``n`` tokens."""
    return compare([n], convention, prompt)[0].ratio


def claims(convention: Convention | None = None, prompt: int = 0) -> dict[str, float | bool]:
    """The paper's two claims checked under a convention: < 50% at 64K, about 25% (20-30%) at 100K."""
    r64, r100 = ratio(CLAIM_64K, convention, prompt), ratio(CLAIM_100K, convention, prompt)
    return {
        "ratio_64k": r64,
        "ratio_100k": r100,
        "below_half_at_64k": r64 < 0.5,
        "about_quarter_at_100k": 0.2 <= r100 <= 0.3,
    }


def plot_flops(
    path: str,
    convention: Convention | None = None,
    max_length: int = 128 * K,
    prompt: int = 0,
) -> str:
    """Write a PNG: cumulative FLOPs of both models (left) and their ratio under every convention (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    convention = convention or get_convention(DEFAULT_CONVENTION)
    lengths = [max(1, round(max_length * i / 256)) for i in range(1, 257)]
    rows = compare(lengths, convention, prompt)
    x = [n / K for n in lengths]

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(x, [r.r1_flops / 1e15 for r in rows], label="DeepSeek-R1", color="tab:red", lw=2)
    left.plot(x, [r.m1_flops / 1e15 for r in rows], label="MiniMax-M1", color="tab:blue", lw=2)
    left.set_xlabel("generation length (K tokens)")
    left.set_ylabel("cumulative inference FLOPs (PFLOP)")
    left.set_title(f"FLOPs to generate N tokens ({convention.name})", fontsize=10)

    for name, conv in CONVENTIONS.items():
        conv = get_convention(name, convention.lm_head)
        chosen = name == convention.name
        right.plot(
            x,
            [r.ratio for r in compare(lengths, conv, prompt)],
            label=name + (" (chosen)" if chosen else ""),
            lw=2.5 if chosen else 1.2,
            ls="-" if chosen else "--",
        )
    for mark in (CLAIM_64K, CLAIM_100K):
        r = ratio(mark, convention, prompt)
        right.plot([mark / K], [r], "o", color="black", ms=4)
        right.annotate(f"{r:.1%}", (mark / K, r), textcoords="offset points", xytext=(4, 6), fontsize=8)
    for level in (0.5, 0.25):
        right.axhline(level, color="grey", lw=0.8, ls=":")
    right.set_ylim(0, 1.2)
    right.set_xlabel("generation length (K tokens)")
    right.set_ylabel("M1 FLOPs / R1 FLOPs")
    right.set_title("M1 / R1 under each convention (paper: <50% at 64K, ~25% at 100K)", fontsize=10)

    for ax in (left, right):
        for mark in (CLAIM_64K, CLAIM_100K):
            ax.axvline(mark / K, color="black", lw=0.8, ls=":")
            ax.annotate(
                f"{mark // K}K",
                (mark / K, 0.02),
                xycoords=("data", "axes fraction"),
                xytext=(3, 0),
                textcoords="offset points",
                fontsize=8,
            )
        ax.set_xlim(0, max_length / K)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left" if ax is left else "upper right")
    fig.savefig(path, dpi=120)
    return path
