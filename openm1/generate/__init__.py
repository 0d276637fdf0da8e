"""Generation: a preallocated hybrid cache, batched sampling, the engine, tokenizers, the server."""

from openm1.generate.cache import CacheFullError, GenerationCache
from openm1.generate.engine import Engine, GenerationResult, TokenEvent
from openm1.generate.sampling import SamplingParams, sample
from openm1.generate.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

__all__ = [
    "ByteTokenizer",
    "CacheFullError",
    "Engine",
    "GenerationCache",
    "GenerationResult",
    "HFTokenizer",
    "SamplingParams",
    "TokenEvent",
    "load_tokenizer",
    "sample",
]
