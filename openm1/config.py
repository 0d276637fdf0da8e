"""Model configuration: every field that changes the math, named presets, and config.json I/O.

One dataclass serves both on-disk dialects of MiniMax checkpoints:

* transformers' ``minimax`` (``model_type: "minimax"``, ``layer_types``, ``*_alpha_factor``), and
* the original MiniMaxAI release (remote code, ``model_type: "minimax_text_01"`` / ``"minimax_m1"``,
  ``attn_type_list``, ``layernorm_*_alpha``, ``rotary_dim``, ``postnorm``).

Reading either gives the same :class:`ModelConfig`; writing produces the transformers dialect plus the
original's extra fields (``rotary_dim``, ``postnorm``, ``attn_type_list``) so nothing is lost.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LINEAR = "linear_attention"
FULL = "full_attention"
LAYER_TYPES = (LINEAR, FULL)

#: DeepNorm's residual factor (2N)^(1/4) for N = 80 layers, as in the released configuration.
M1_RESIDUAL_ALPHA = 3.5565588200778455

ORIGINAL_MODEL_TYPES = ("minimax_text_01", "minimax_m1", "MiniMaxText01", "MiniMaxM1")


class ConfigError(ValueError):
    """A configuration that cannot describe a valid model; the message names the field."""


def hybrid_layer_types(num_layers: int, softmax_every: int = 8) -> list[str]:
    """The released pattern: ``softmax_every - 1`` lightning layers, then one softmax layer, repeated."""
    return [FULL if (i + 1) % softmax_every == 0 else LINEAR for i in range(num_layers)]


@dataclass
class ModelConfig:
    """Everything that determines what a MiniMax-M1-style hybrid model computes."""

    vocab_size: int = 200_064
    """Rows of the embedding and the LM head."""
    hidden_size: int = 6144
    """Width of the residual stream."""
    num_hidden_layers: int = 80
    """Decoder layers; must equal ``len(layer_types)``."""
    layer_types: list[str] = field(default_factory=lambda: hybrid_layer_types(80))
    """Per layer, ``"linear_attention"`` (lightning) or ``"full_attention"`` (softmax GQA)."""
    num_attention_heads: int = 64
    """Query heads of both attention kinds (lightning has no separate KV heads)."""
    num_key_value_heads: int = 8
    """KV heads of the softmax layers (GQA); must divide ``num_attention_heads``."""
    head_dim: int = 128
    """Per-head width of q, k and v in both attention kinds."""
    block_size: int = 256
    """Lightning attention block length of the released blockwise algorithm (math-neutral)."""
    rotary_dim: int = 64
    """Leading dims of each softmax head that RoPE rotates (the release: 64 of 128; transformers: all)."""
    rope_theta: float = 10_000_000.0
    """RoPE base."""
    max_position_embeddings: int = 10_240_000
    """Longest position the model was built for (informational; RoPE is computed on the fly)."""
    num_local_experts: int = 32
    """Routed experts per MoE layer."""
    num_experts_per_tok: int = 2
    """Experts each token is sent to (top-k)."""
    intermediate_size: int = 9216
    """Hidden width of each SwiGLU expert."""
    linear_attn_alpha_factor: float = M1_RESIDUAL_ALPHA
    """Residual (normed input) weight around lightning attention."""
    linear_attn_beta_factor: float = 1.0
    """Branch weight of lightning attention."""
    full_attn_alpha_factor: float = M1_RESIDUAL_ALPHA
    """Residual weight around softmax attention."""
    full_attn_beta_factor: float = 1.0
    """Branch weight of softmax attention."""
    mlp_alpha_factor: float = M1_RESIDUAL_ALPHA
    """Residual weight around the MoE."""
    mlp_beta_factor: float = 1.0
    """Branch weight of the MoE."""
    postnorm: bool = True
    """True (the release): the residual is the *normed* input; False: the ordinary pre-norm residual."""
    rms_norm_eps: float = 1e-5
    """Epsilon of the layer norms and the final norm."""
    lightning_norm_eps: float = 1e-6
    """Epsilon of the RMSNorm over all heads at the lightning output (fixed at 1e-6 in the release)."""
    tie_word_embeddings: bool = False
    """Share the embedding matrix with the LM head."""
    hidden_act: str = "silu"
    """Activation of the experts and of the lightning q/k/v (only SiLU is released)."""
    router_aux_loss_coef: float = 0.001
    """Default weight of the load-balancing loss (trainers may schedule it)."""
    lm_head_fp32: bool = True
    """Keep the LM head and its product in float32: the paper's fix for train/inference mismatch."""
    initializer_range: float = 0.02
    """Std of the normal init of fresh weights."""
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        self.layer_types = list(self.layer_types)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check the fields once, with an error that names the field and what is allowed."""

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "block_size",
            "num_local_experts",
            "num_experts_per_tok",
            "intermediate_size",
        ):
            value = getattr(self, name)
            need(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        bad = [(i, t) for i, t in enumerate(self.layer_types) if t not in LAYER_TYPES]
        need(
            not bad,
            f"layer_types[{bad[0][0]}] = {bad[0][1]!r} is not a known layer type; use one of {LAYER_TYPES}"
            if bad
            else "",
        )
        need(
            len(self.layer_types) == self.num_hidden_layers,
            f"layer_types has {len(self.layer_types)} entries but num_hidden_layers is "
            f"{self.num_hidden_layers}; give one type per layer",
        )
        need(
            self.num_attention_heads % self.num_key_value_heads == 0,
            f"num_key_value_heads ({self.num_key_value_heads}) must divide num_attention_heads "
            f"({self.num_attention_heads})",
        )
        need(
            0 < self.rotary_dim <= self.head_dim and self.rotary_dim % 2 == 0,
            f"rotary_dim must be even and in (0, head_dim={self.head_dim}], got {self.rotary_dim}",
        )
        need(
            self.num_experts_per_tok <= self.num_local_experts,
            f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds num_local_experts "
            f"({self.num_local_experts})",
        )
        need(
            self.hidden_act == "silu",
            f"hidden_act must be 'silu' (the released model), got {self.hidden_act!r}",
        )
        need(self.rope_theta > 0, f"rope_theta must be positive, got {self.rope_theta}")
        need(self.rms_norm_eps > 0 and self.lightning_norm_eps > 0, "norm epsilons must be positive")

    # ------------------------------------------------------------------ derived
    @property
    def num_lightning_layers(self) -> int:
        return sum(t == LINEAR for t in self.layer_types)

    @property
    def num_softmax_layers(self) -> int:
        return sum(t == FULL for t in self.layer_types)

    @property
    def attn_type_list(self) -> list[int]:
        """The original release's encoding of ``layer_types`` (0 lightning, 1 softmax)."""
        return [int(t == FULL) for t in self.layer_types]

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ config.json
    def to_dict(self) -> dict[str, Any]:
        """config.json content in transformers' ``minimax`` dialect, plus the original's extra fields."""
        d: dict[str, Any] = {
            "architectures": ["MiniMaxForCausalLM"],
            "model_type": "minimax",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "layer_types": list(self.layer_types),
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": self.hidden_act,
            "block_size": self.block_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": self.rope_theta,
                "partial_rotary_factor": self.rotary_dim / self.head_dim,
            },
            "num_local_experts": self.num_local_experts,
            "num_experts_per_tok": self.num_experts_per_tok,
            "router_aux_loss_coef": self.router_aux_loss_coef,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "linear_attn_alpha_factor": self.linear_attn_alpha_factor,
            "linear_attn_beta_factor": self.linear_attn_beta_factor,
            "full_attn_alpha_factor": self.full_attn_alpha_factor,
            "full_attn_beta_factor": self.full_attn_beta_factor,
            "mlp_alpha_factor": self.mlp_alpha_factor,
            "mlp_beta_factor": self.mlp_beta_factor,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            # The original release's fields, kept so that its code and openm1 read the same model.
            "rotary_dim": self.rotary_dim,
            "postnorm": self.postnorm,
            "attn_type_list": self.attn_type_list,
            "openm1": {"lightning_norm_eps": self.lightning_norm_eps, "lm_head_fp32": self.lm_head_fp32},
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Read a config.json of either dialect (transformers ``minimax`` or the original release)."""
        model_type = d.get("model_type", "minimax")
        original = "attn_type_list" in d and "layer_types" not in d or model_type in ORIGINAL_MODEL_TYPES
        if model_type not in ("minimax",) + ORIGINAL_MODEL_TYPES:
            raise ConfigError(
                f"config.json has model_type {model_type!r}; openm1 reads 'minimax' (transformers) or "
                f"one of {ORIGINAL_MODEL_TYPES} (the original MiniMaxAI release)"
            )
        if d.get("shared_intermediate_size", 0) not in (0, None, [0]):
            raise ConfigError(
                f"shared_intermediate_size = {d['shared_intermediate_size']}: shared experts are not part of "
                "MiniMax-M1 and openm1 does not implement them"
            )
        get = d.get
        num_layers = int(_required(d, "num_hidden_layers"))
        num_heads = int(_required(d, "num_attention_heads"))
        hidden = int(_required(d, "hidden_size"))
        head_dim = int(get("head_dim") or hidden // num_heads)
        if "layer_types" in d and d["layer_types"] is not None:
            layer_types = list(d["layer_types"])
        elif "attn_type_list" in d:
            codes = list(d["attn_type_list"])
            bad = [c for c in codes if c not in (0, 1)]
            if bad:
                raise ConfigError(
                    f"attn_type_list holds {bad[0]!r}; the original release uses 0 (lightning), 1 (softmax)"
                )
            layer_types = [FULL if c == 1 else LINEAR for c in codes]
        else:
            raise ConfigError(
                "config.json has neither layer_types nor attn_type_list; write the layer pattern out "
                "(transformers would otherwise silently alternate the two kinds)"
            )
        rope = get("rope_parameters") or {}
        rope_theta = float(rope.get("rope_theta", get("rope_theta", 1_000_000.0)))
        if get("rotary_dim") is not None:
            rotary_dim = int(get("rotary_dim"))
        else:
            factor = rope.get("partial_rotary_factor", get("partial_rotary_factor", 1.0))
            rotary_dim = int(round(head_dim * float(factor)))
        extra = get("openm1") or {}
        if original:
            alphas = {
                "linear_attn_alpha_factor": get("layernorm_linear_attention_alpha", 1.0),
                "linear_attn_beta_factor": get("layernorm_linear_attention_beta", 1.0),
                "full_attn_alpha_factor": get("layernorm_full_attention_alpha", 1.0),
                "full_attn_beta_factor": get("layernorm_full_attention_beta", 1.0),
                "mlp_alpha_factor": get("layernorm_mlp_alpha", 1.0),
                "mlp_beta_factor": get("layernorm_mlp_beta", 1.0),
            }
        else:
            alphas = {
                k: get(k, 1.0)
                for k in (
                    "linear_attn_alpha_factor",
                    "linear_attn_beta_factor",
                    "full_attn_alpha_factor",
                    "full_attn_beta_factor",
                    "mlp_alpha_factor",
                    "mlp_beta_factor",
                )
            }
        return cls(
            vocab_size=int(_required(d, "vocab_size")),
            hidden_size=hidden,
            num_hidden_layers=num_layers,
            layer_types=layer_types,
            num_attention_heads=num_heads,
            num_key_value_heads=int(get("num_key_value_heads") or num_heads),
            head_dim=head_dim,
            block_size=int(get("block_size", 256)),
            rotary_dim=rotary_dim,
            rope_theta=rope_theta,
            max_position_embeddings=int(get("max_position_embeddings", 10_240_000)),
            num_local_experts=int(get("num_local_experts", get("num_experts", 8))),
            num_experts_per_tok=int(get("num_experts_per_tok", 2)),
            intermediate_size=int(_required(d, "intermediate_size")),
            postnorm=bool(get("postnorm", True)),
            rms_norm_eps=float(get("rms_norm_eps", 1e-5)),
            lightning_norm_eps=float(extra.get("lightning_norm_eps", 1e-6)),
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
            hidden_act=str(get("hidden_act", "silu")),
            router_aux_loss_coef=float(get("router_aux_loss_coef", 0.001)),
            lm_head_fp32=bool(extra.get("lm_head_fp32", True)),
            initializer_range=float(get("initializer_range", 0.02)),
            bos_token_id=get("bos_token_id"),
            eos_token_id=get("eos_token_id"),
            pad_token_id=get("pad_token_id"),
            **{k: float(v) for k, v in alphas.items()},
        )

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/config.json`` atomically."""
        if self.rotary_dim != self.head_dim:
            warnings.warn(
                f"rotary_dim {self.rotary_dim} < head_dim {self.head_dim}: transformers 5.x's minimax model "
                "rotates the whole head and will compute a different model; openm1 and the original code "
                "read rotary_dim from this config.json",
                stacklevel=2,
            )
        path = Path(folder) / "config.json"
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder_or_file: str | os.PathLike) -> ModelConfig:
        """Read ``config.json`` from a checkpoint folder (or the file itself)."""
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config.json at {path}: point at a checkpoint folder that has one")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(data)


def _required(d: dict[str, Any], key: str) -> Any:
    if d.get(key) is None:
        raise ConfigError(f"config.json lacks the required field {key!r}")
    return d[key]


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------- presets
def _preset_tiny() -> ModelConfig:
    return ModelConfig(
        vocab_size=512,  # 256 bytes + the byte tokenizer's special tokens (openm1.generate.tokenizer)
        hidden_size=64,
        num_hidden_layers=8,
        layer_types=hybrid_layer_types(8),
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        block_size=16,
        rotary_dim=8,
        rope_theta=10_000.0,
        max_position_embeddings=4096,
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=96,
        linear_attn_alpha_factor=math.sqrt(math.sqrt(16)),
        full_attn_alpha_factor=math.sqrt(math.sqrt(16)),
        mlp_alpha_factor=math.sqrt(math.sqrt(16)),
    )


def _preset_small() -> ModelConfig:
    alpha = (2 * 8) ** 0.25
    return ModelConfig(
        vocab_size=32_000,
        hidden_size=512,
        num_hidden_layers=8,
        layer_types=hybrid_layer_types(8),
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        block_size=256,
        rotary_dim=32,
        rope_theta=1_000_000.0,
        max_position_embeddings=131_072,
        num_local_experts=8,
        num_experts_per_tok=2,
        intermediate_size=640,
        linear_attn_alpha_factor=alpha,
        full_attn_alpha_factor=alpha,
        mlp_alpha_factor=alpha,
    )


def _preset_1b() -> ModelConfig:
    alpha = (2 * 16) ** 0.25
    return ModelConfig(
        vocab_size=32_000,
        hidden_size=1536,
        num_hidden_layers=16,
        layer_types=hybrid_layer_types(16),
        num_attention_heads=12,
        num_key_value_heads=4,
        head_dim=128,
        block_size=256,
        rotary_dim=64,
        rope_theta=10_000_000.0,
        max_position_embeddings=1_048_576,
        num_local_experts=8,
        num_experts_per_tok=2,
        intermediate_size=1280,
        linear_attn_alpha_factor=alpha,
        full_attn_alpha_factor=alpha,
        mlp_alpha_factor=alpha,
    )


def _preset_minimax_m1() -> ModelConfig:
    return ModelConfig()  # the defaults are the released MiniMax-M1 configuration


PRESETS = {
    "tiny": _preset_tiny,
    "small": _preset_small,
    "1b": _preset_1b,
    "minimax-m1": _preset_minimax_m1,
}


def preset(name: str) -> ModelConfig:
    """A named configuration: ``tiny`` (CPU tests), ``small`` (~100M), ``1b``, ``minimax-m1`` (released)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
