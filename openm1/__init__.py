"""openm1: an open implementation of MiniMax-M1 (hybrid lightning/softmax attention, MoE, CISPO RL)."""

from __future__ import annotations

from openm1.config import ModelConfig, preset

__version__ = "0.1.0"

__all__ = ["ModelConfig", "preset", "__version__", "from_pretrained", "MiniMaxM1ForCausalLM"]


def __getattr__(name: str):
    # Lazy, so that `import openm1` (and the CLI's `info`/`flops`) does not pay for importing the model.
    if name == "from_pretrained":
        from openm1.model.checkpoint import from_pretrained

        return from_pretrained
    if name == "MiniMaxM1ForCausalLM":
        from openm1.model.model import MiniMaxM1ForCausalLM

        return MiniMaxM1ForCausalLM
    raise AttributeError(f"module 'openm1' has no attribute {name!r}")
