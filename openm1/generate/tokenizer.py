"""Tokenizers for generation: a checkpoint folder's own (transformers) and a byte-level one for presets.

Both offer the few methods the engine and the server need: ``encode``, ``decode``, ``eos_token_ids``,
``chat_prompt`` (messages -> prompt ids, through the folder's chat template when it has one).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

BYTE_SPECIALS = ("<pad>", "<s>", "</s>", "<think>", "</think>")


class ByteTokenizer:
    """Bytes 0..255 are their own ids; the special tokens follow (``<s>`` = 257, ``</s>`` = 258 ...).

    For presets with random weights: no files, any text round-trips, and the special tokens (the
    reasoning markers among them) are single ids so the server's parsing works as with a real model.
    """

    def __init__(self, vocab_size: int) -> None:
        need = 256 + len(BYTE_SPECIALS)
        if vocab_size < need:
            raise ValueError(
                f"the byte tokenizer needs a vocabulary of at least {need} (256 bytes + {BYTE_SPECIALS}); "
                f"the model has {vocab_size}: use a checkpoint folder with its own tokenizer"
            )
        self.vocab_size = vocab_size
        self.special_ids = {tok: 256 + i for i, tok in enumerate(BYTE_SPECIALS)}
        self.special_tokens = {i: tok for tok, i in self.special_ids.items()}
        self.pad_token_id = self.special_ids["<pad>"]
        self.bos_token_id = self.special_ids["<s>"]
        self.eos_token_ids = [self.special_ids["</s>"]]
        self._split = re.compile("(" + "|".join(re.escape(t) for t in BYTE_SPECIALS) + ")")
        self.name = "bytes"

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for part in self._split.split(text):
            if part in self.special_ids:
                ids.append(self.special_ids[part])
            elif part:
                ids.extend(part.encode("utf-8"))
        return ids

    def decode(self, ids: list[int]) -> str:
        out, pending = [], bytearray()
        for i in ids:
            if i < 256:
                pending.append(i)
                continue
            out.append(pending.decode("utf-8", errors="replace"))
            pending = bytearray()
            out.append(self.special_tokens.get(i, ""))  # ids past the specials (random weights) are silent
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        """A simple built-in template: ``<s>role\\ncontent</s>\\n`` per message, then ``<s>assistant\\n``."""
        text = "".join(f"<s>{m['role']}\n{m['content']}</s>\n" for m in messages) + "<s>assistant\n"
        return self.encode(text)


class HFTokenizer:
    """A checkpoint folder's tokenizer through ``transformers.AutoTokenizer`` and its chat template."""

    def __init__(self, folder: str | os.PathLike, extra_eos: list[int] | None = None) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "loading a checkpoint's tokenizer needs transformers: pip install 'openm1[hf]'"
            ) from e
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        self.vocab_size = len(self.tok)
        eos = [self.tok.eos_token_id] if self.tok.eos_token_id is not None else []
        self.eos_token_ids = sorted({*eos, *(extra_eos or [])})
        self.pad_token_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        self.name = Path(folder).name

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=True))

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        if not getattr(self.tok, "chat_template", None):
            raise ValueError(
                f"the tokenizer in {self.name!r} has no chat template; use /v1/completions with a raw prompt"
            )
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tok.encode(text, add_special_tokens=False))


def has_hf_tokenizer(folder: str | os.PathLike) -> bool:
    path = Path(folder)
    return path.is_dir() and any(
        (path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    )


def load_tokenizer(
    folder: str | os.PathLike | None, vocab_size: int, eos_token_id: int | list[int] | None = None
) -> ByteTokenizer | HFTokenizer:
    """The folder's own tokenizer when it has one, else the byte tokenizer (presets, random weights)."""
    extra = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    if folder is not None and has_hf_tokenizer(folder):
        return HFTokenizer(folder, extra_eos=extra)
    return ByteTokenizer(vocab_size)


class IncrementalDetokenizer:
    """Text of a growing token list, emitted piece by piece without splitting a character.

    Decodes a short window of recent tokens (so tokenizers that drop a leading space decode in
    context) and holds back text that ends in an incomplete UTF-8 sequence.
    """

    def __init__(self, decode, context: list[int] | None = None) -> None:  # noqa: ANN001 - a callable
        self.decode = decode
        self.ids = list(context or [])[-4:]
        self.prefix = 0
        self.read = len(self.ids)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end), as replacement text."""
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]
