"""The MiniMax-M1 model: lightning and softmax attention layers, MoE, the decoder, checkpoints."""

from openm1.model.cache import HybridCache
from openm1.model.model import CausalLMOutput, MiniMaxM1ForCausalLM, MiniMaxM1Model

__all__ = ["HybridCache", "CausalLMOutput", "MiniMaxM1ForCausalLM", "MiniMaxM1Model"]
