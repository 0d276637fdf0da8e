"""Per-request generation parameters and the batched sampler (greedy, temperature, top-k, top-p).

Every row of a batch has its own parameters and its own seeded ``torch.Generator``; a row draws one
uniform number per token and picks its token by inverse CDF, so a seeded request gives the same tokens
whatever else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: The paper's early truncation: stop once this many consecutive tokens each had probability above p.
REPETITION_WINDOW = 3000
REPETITION_THRESHOLD = 0.99


@dataclass
class SamplingParams:
    """What one request asks for. ``validate()`` names the bad field and the allowed values."""

    max_new_tokens: int = 256
    """Tokens to generate at most (finish reason ``"length"``)."""
    temperature: float = 1.0
    """0 means greedy (argmax); otherwise logits are divided by it before top-k / top-p."""
    top_k: int = 0
    """Keep the k most likely tokens (0: all)."""
    top_p: float = 1.0
    """Keep the smallest set of most likely tokens whose probability reaches p (1: all)."""
    seed: int | None = None
    """Seed of this request's own generator (None: a fresh random seed)."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Tokens that end the sequence (kept in ``token_ids``, not in the text), besides the EOS tokens."""
    stop: list[str] = field(default_factory=list)
    """Strings that end the sequence; the text is cut before the first one found."""
    ignore_eos: bool = False
    """Keep generating past the tokenizer's / model's EOS tokens."""
    logprobs: int = 0
    """Also return the top-n alternatives' log-probs per token (the chosen token's is always returned)."""
    repetition_window: int | None = REPETITION_WINDOW
    """Early truncation: stop after this many consecutive confident tokens (None: off)."""
    repetition_threshold: float = REPETITION_THRESHOLD
    """Early truncation: a token is confident when its probability exceeds this."""

    def __post_init__(self) -> None:
        self.stop_token_ids = list(self.stop_token_ids)
        self.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def validate(self, vocab_size: int | None = None) -> SamplingParams:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        need(
            isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
            f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}",
        )
        need(
            isinstance(self.temperature, (int, float)) and 0 <= self.temperature <= 100,
            f"temperature must be in [0, 100] (0 = greedy), got {self.temperature!r}",
        )
        need(
            isinstance(self.top_k, int) and self.top_k >= 0,
            f"top_k must be a non-negative integer (0 = off), got {self.top_k!r}",
        )
        need(
            isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1,
            f"top_p must be in (0, 1], got {self.top_p!r}",
        )
        need(self.seed is None or isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}")
        need(
            isinstance(self.logprobs, int) and 0 <= self.logprobs <= 20,
            f"logprobs must be an integer in [0, 20], got {self.logprobs!r}",
        )
        need(
            all(isinstance(s, str) and s for s in self.stop),
            f"stop must be a list of non-empty strings, got {self.stop!r}",
        )
        need(
            self.repetition_window is None
            or (isinstance(self.repetition_window, int) and self.repetition_window >= 1),
            f"repetition_window must be a positive integer or None, got {self.repetition_window!r}",
        )
        need(
            0 < self.repetition_threshold < 1,
            f"repetition_threshold must be in (0, 1), got {self.repetition_threshold!r}",
        )
        for t in self.stop_token_ids:
            need(
                isinstance(t, int) and t >= 0 and (vocab_size is None or t < vocab_size),
                f"stop_token_ids holds {t!r}, not a token id in [0, {vocab_size})",
            )
        return self


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    uniforms: torch.Tensor,
    *,
    all_greedy: bool | None = None,
    filtered: bool | None = None,
) -> torch.Tensor:
    """One token per row of ``logits [rows, vocab]``; the other arguments are per row ``[rows]``.

    ``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1 are off; ``uniforms`` in [0, 1) are the
    rows' random draws. Top-p applies to the distribution left after top-k, as transformers does.
    ``all_greedy`` (every temperature 0) and ``filtered`` (some top-k or top-p on), when the caller
    knows them, spare reading the parameters back from the device (a sync on a GPU).
    """
    greedy_tokens = logits.argmax(dim=-1)
    greedy = temperature == 0
    if all_greedy is None:
        all_greedy = bool(greedy.all())
    if all_greedy:
        return greedy_tokens
    vocab = logits.shape[-1]
    scaled = logits.float() / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    if filtered is None:
        filtered = bool((top_k > 0).any()) or bool((top_p < 1).any())
    if filtered:
        scaled, order = scaled.sort(dim=-1, descending=True)
        rank = torch.arange(vocab, device=logits.device)[None, :]
        k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab))
        scaled = scaled.masked_fill(rank >= k[:, None], float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(mass_before >= top_p[:, None], 0.0)  # the first token always stays
    else:
        probs = torch.softmax(scaled, dim=-1)
    cdf = probs.cumsum(dim=-1)
    target = uniforms.to(cdf.device, cdf.dtype)[:, None] * cdf[:, -1:]
    choice = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    last_kept = vocab - 1 - (probs > 0).flip(-1).int().argmax(dim=-1)  # never step past the support
    choice = torch.minimum(choice, last_kept)
    tokens = order.gather(-1, choice[:, None]).squeeze(-1) if filtered else choice
    return torch.where(greedy, greedy_tokens, tokens)
