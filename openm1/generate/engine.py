"""The generation engine: batched chunked prefill, batched decode, continuous batching, stop rules.

One :class:`Engine` owns a model and a :class:`GenerationCache` of ``max_batch`` rows. ``add_request``
queues a prompt; each ``step()`` launches the next decode step of every running sequence, reads the
previous step's tokens back (decoding runs one step ahead of the host), then admits queued requests
into free rows (one left-padded prefill of all of them, in chunks of at most ``prefill_chunk`` tokens
so a long prompt runs in bounded activation memory). A sequence leaves its row when it meets a stop
token or string, ``max_new_tokens``, or the paper's early truncation (``repetition_window`` consecutive
tokens each with probability above ``repetition_threshold``); the next step fills the row. The
engine's forwards run the layers' inference forms (``inference.py``); ``docs/generate.md`` has the
whole picture.

Log-probs are ``log_softmax`` of the model's float32 logits (the FP32 LM head) before temperature,
top-k or top-p: the probabilities of the model itself, which an RL trainer recomputes. The early
truncation reads the same probabilities.
"""

from __future__ import annotations

import array
import itertools
import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from openm1.generate.cache import GenerationCache
from openm1.generate.inference import InferenceForms, resolve_expert_form
from openm1.generate.prefill_graphs import PREFILL_GRAPH_MAX, PrefillGraphs
from openm1.generate.sampling import SamplingParams, make_generator, sample
from openm1.generate.tokenizer import IncrementalDetokenizer

FINISH_REASONS = ("stop", "length", "repetition", "abort")


@dataclass
class TokenEvent:
    """One generated token of one request, as the engine streams it."""

    request_id: str
    token_id: int
    logprob: float
    top_logprobs: dict[int, float] | None
    text: str
    """Text made visible by this token ('' while a character or a possible stop string is incomplete)."""
    finished: bool = False
    finish_reason: str | None = None


@dataclass
class GenerationResult:
    request_id: str
    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    logprobs: list[float]
    top_logprobs: list[dict[int, float]] | None
    finish_reason: str
    prefill_ms: float
    """Wall time of the prefill this request was part of (a batch of prompts shares one)."""
    decode_tokens_per_s: float
    """This request's tokens after the first, per second of its decoding."""


@dataclass
class Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    generator: torch.Generator
    detok: IncrementalDetokenizer | None
    prompt_tensor: torch.Tensor
    """The prompt as an int64 CPU tensor (made once, at admission: converting a long list is slow)."""
    row: int = -1
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    confident_run: int = 0
    in_flight: int = 0
    """1 while a launched decode step for this request has not been read back yet."""
    finish_reason: str | None = None
    prefill_ms: float = 0.0
    t_first: float = 0.0
    t_end: float = 0.0

    def result(self) -> GenerationResult:
        decode_s = self.t_end - self.t_first
        n = len(self.token_ids) - 1
        return GenerationResult(
            self.request_id,
            self.prompt_ids,
            list(self.token_ids),
            self.text,
            list(self.logprobs),
            list(self.top_logprobs) if self.params.logprobs else None,
            self.finish_reason or "abort",
            self.prefill_ms,
            n / decode_s if n > 0 and decode_s > 0 else 0.0,
        )


@dataclass
class _Sampled:
    """One step's chosen tokens: on the device (``tokens``) and on their way to the host (``host``:
    per row the token, its log-prob, then ``n_top`` alternative ids and their log-probs)."""

    reqs: list[Request]
    tokens: torch.Tensor
    host: torch.Tensor
    done: torch.cuda.Event | None
    n_top: int


LogitsHook = Callable[[torch.Tensor, list[str]], torch.Tensor]


def _prompt_tensor(prompt, vocab_size: int) -> torch.Tensor:  # noqa: ANN001 - any sequence of ints
    """Token ids as an int64 CPU tensor, checked: integers, at least one, inside the vocabulary.

    Goes through ``array.array`` (one C loop), about 15x faster than ``torch.tensor`` on a long list:
    at 8K tokens that is milliseconds of a prefill that itself takes a few on a GPU."""
    try:
        ids = array.array("q", prompt)
    except (TypeError, OverflowError) as e:
        raise ValueError(f"prompt token ids must be integers ({e})") from None
    if not ids:
        raise ValueError("the prompt is empty: give at least one token")
    t = torch.frombuffer(ids, dtype=torch.int64).clone()
    lo, hi = torch.aminmax(t)
    if lo < 0 or hi >= vocab_size:
        bad = t[(t < 0) | (t >= vocab_size)][0]
        raise ValueError(f"prompt token {int(bad)} is outside the vocabulary [0, {vocab_size})")
    return t


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without waiting for the device (a plain ``.to`` syncs the stream)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class Engine:
    """Continuous batching over a preallocated cache; ``step()`` is the scheduler's one move.

    ``cuda_graph`` replays the decode step as a CUDA graph, and a lone prompt of up to
    ``prefill_graph_max`` tokens (default 8192 with ``cuda_graph``, else 0: off) as a prefill graph of
    its length bucket (see prefill_graphs.py); ``experts`` picks the MoE form of the engine's forwards
    (``auto``, ``grouped``, ``dense``, ``reference``: see ``inference.py``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer=None,  # noqa: ANN001 - ByteTokenizer, HFTokenizer or anything with encode/decode
        *,
        max_batch: int = 8,
        max_len: int = 4096,
        prefill_chunk: int = 4096,
        eos_token_ids: Iterable[int] | None = None,
        compile: bool = False,
        cuda_graph: bool = False,
        logits_hook: LogitsHook | None = None,
        experts: str = "auto",
        prefill_graph_max: int | None = None,
    ) -> None:
        if max_batch < 1 or max_len < 2 or prefill_chunk < 1:
            raise ValueError(
                f"max_batch, max_len and prefill_chunk must be positive (max_len >= 2); got {max_batch}, "
                f"{max_len}, {prefill_chunk}"
            )
        self.model = model.eval()
        self.config = model.config
        self.tokenizer = tokenizer
        param = next(model.parameters())
        self.device = param.device
        self.max_batch, self.max_len, self.prefill_chunk = max_batch, max_len, prefill_chunk
        self.cache = GenerationCache(
            self.config, max_batch, max_len, device=self.device, dtype=model.model.embed_tokens.weight.dtype
        )
        if eos_token_ids is None:
            eos_token_ids = getattr(tokenizer, "eos_token_ids", None) or _config_eos(self.config)
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        self.pad_token_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self.logits_hook = logits_hook
        self.waiting: deque[Request] = deque()
        self.running: dict[str, Request] = {}
        self._ids = itertools.count()
        self._finished: dict[str, GenerationResult] = {}
        self.stats = {
            "prefill_tokens": 0,
            "prefill_s": 0.0,
            "decode_tokens": 0,
            "decode_s": 0.0,
            "peak_batch": 0,
        }
        dtype = model.model.embed_tokens.weight.dtype
        self.experts_prefill = resolve_expert_form(experts, self.device, dtype)
        self._experts_decode = resolve_expert_form(experts, self.device, dtype, decode=cuda_graph)
        self._experts_auto = experts == "auto"
        self.experts_graph: str | None = None
        """The MoE form the decode graph holds (None without a graph)."""
        self.graph_ms: dict[str, float] = {}
        """Replay times of the candidate decode graphs, when several were captured."""
        self._forms = InferenceForms(model, self.experts_prefill)
        self._pending: _Sampled | None = None
        self._row_index_cache: tuple[tuple[int, ...], torch.Tensor | None] = ((), None)
        self._forward = self._eager_forward
        if compile:
            self._forward = self._compiled_forward()
        self._graph = self._capture_graph() if cuda_graph else None
        if prefill_graph_max is None:
            prefill_graph_max = PREFILL_GRAPH_MAX if cuda_graph else 0
        if prefill_graph_max < 0:
            raise ValueError(f"prefill_graph_max must be >= 0 (0: off), got {prefill_graph_max}")
        self._prefill_graphs = None
        if prefill_graph_max and self.device.type == "cuda" and self.experts_prefill != "reference":
            self._prefill_graphs = PrefillGraphs(model, self.cache, self._forms, prefill_graph_max)
        # each row's next input token, written on the device by the sampler (the graph's own buffer)
        self._next = (
            self._graph.tokens
            if self._graph is not None
            else torch.zeros(max_batch, 1, dtype=torch.long, device=self.device)
        )

    # ------------------------------------------------------------------ requests
    def add_request(
        self, prompt: list[int] | str, params: SamplingParams | None = None, request_id: str | None = None
    ) -> str:
        """Queue a prompt (token ids, or text when the engine has a tokenizer); returns its id."""
        params = (params or SamplingParams()).validate(self.config.vocab_size)
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs an engine with a tokenizer; pass token ids instead")
            prompt = self.tokenizer.encode(prompt)
        prompt_tensor = _prompt_tensor(prompt, self.config.vocab_size)
        prompt = prompt_tensor.tolist()
        if len(prompt) + params.max_new_tokens > self.max_len:
            raise ValueError(
                f"the prompt has {len(prompt)} tokens and max_new_tokens is {params.max_new_tokens}: "
                f"{len(prompt) + params.max_new_tokens} > the engine's max_len {self.max_len}; shorten the "
                "prompt, lower max_new_tokens or raise max_len"
            )
        request_id = request_id or f"req-{next(self._ids)}"
        if request_id in self.running or any(r.request_id == request_id for r in self.waiting):
            raise ValueError(f"request id {request_id!r} is already in use")
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self.eos_token_ids))
        detok = None
        if self.tokenizer is not None:
            detok = IncrementalDetokenizer(self.tokenizer.decode, context=prompt)
        req = Request(
            request_id,
            prompt,
            params,
            frozenset(stop_ids),
            make_generator(params.seed),
            detok,
            prompt_tensor,
        )
        self.waiting.append(req)
        return request_id

    def abort(self, request_id: str) -> GenerationResult | None:
        """Drop a queued or running request (its row is freed at once)."""
        for req in list(self.waiting):
            if req.request_id == request_id:
                self.waiting.remove(req)
                req.finish_reason = "abort"
                return req.result()
        req = self.running.pop(request_id, None)
        if req is None:
            return None
        req.finish_reason, req.t_end = "abort", time.perf_counter()
        self.cache.free(req.row)
        return req.result()

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def take_result(self, request_id: str) -> GenerationResult | None:
        """The result of a finished request (once; the engine forgets it after)."""
        return self._finished.pop(request_id, None)

    # ------------------------------------------------------------------ the scheduler's step
    @torch.no_grad()
    def step(self) -> list[TokenEvent]:
        """One move: launch the next decode step, read the previous one's tokens, admit waiting requests.

        Decoding runs one step ahead of the host: step n+1 is launched (its input tokens are step n's,
        still on the device) before step n's tokens are read back and checked against the stop rules,
        so the device never waits for this Python. A sequence that stops at step n has computed one
        token too many in step n+1; that token is dropped and its row freed.
        """
        events: list[TokenEvent] = []
        start = time.perf_counter()
        decoding = [
            r
            for r in self.running.values()
            if r.token_ids and len(r.token_ids) + r.in_flight < r.params.max_new_tokens
        ]
        launched = self._launch_decode(decoding) if decoding else None
        if self._pending is not None:
            events += self._collect(self._pending)
        self._pending = launched
        if launched is not None or events:
            self.stats["decode_tokens"] += len(events)
            self.stats["decode_s"] += time.perf_counter() - start
            self.stats["peak_batch"] = max(self.stats["peak_batch"], len(decoding))
        if self.waiting and self.cache.free_rows:
            events += self._prefill()
        return events

    def _prefill(self) -> list[TokenEvent]:
        group: list[Request] = []
        while self.waiting and len(group) < self.cache.free_rows:
            group.append(self.waiting.popleft())
        for req in group:
            req.row = self.cache.allocate()
            self.running[req.request_id] = req
        start = time.perf_counter()
        lengths = [len(r.prompt_ids) for r in group]
        logits = None
        if len(group) == 1 and self._graphable(lengths[0]):
            logits = self._graphed_prefill(group[0])
        if logits is None:
            logits = self._eager_prefill(group, lengths)
        sampled = self._sample(group, logits)
        self._next.index_copy_(0, self._row_index([r.row for r in group]), sampled.tokens[:, None])
        events = self._collect(sampled)
        elapsed = time.perf_counter() - start
        for req in group:
            req.prefill_ms = elapsed * 1e3
        self.stats["prefill_tokens"] += sum(lengths)
        self.stats["prefill_s"] += elapsed
        return events

    def _graphable(self, length: int) -> bool:
        graphs = self._prefill_graphs
        return graphs is not None and length <= self.prefill_chunk and graphs.covers(length)

    def _graphed_prefill(self, req: Request) -> torch.Tensor | None:
        """The prompt's last logits from its bucket's prefill graph; None (graphs off, row reset) if the
        capture fails, so the eager prefill takes over."""
        try:
            logits = self._prefill_graphs(req.row, req.prompt_tensor, self.pad_token_id)
        except Exception as e:  # noqa: BLE001 - a slower prefill beats none
            warnings.warn(
                f"prefill graph capture failed ({type(e).__name__}: {e}); prefilling eagerly", stacklevel=3
            )
            self._prefill_graphs = None
            self.cache.reset_row(req.row)
            return None
        self.cache.lengths[req.row] = len(req.prompt_ids)
        return logits

    def _eager_prefill(self, group: list[Request], lengths: list[int]) -> torch.Tensor:
        """Left-padded prompts in chunks of ``prefill_chunk`` tokens; the last logits ``[rows, vocab]``."""
        longest, shortest = max(lengths), min(lengths)
        ids = torch.full((len(group), longest), self.pad_token_id, dtype=torch.long)
        for i, req in enumerate(group):
            ids[i, longest - lengths[i] :] = req.prompt_tensor
        ids = _to_device(ids, self.device)
        view = self.cache.view([r.row for r in group])
        chunk = max(1, self.prefill_chunk // len(group))
        with self._forms:
            for a in range(0, longest, chunk):
                b = min(a + chunk, longest)
                mask = None
                if a < longest - shortest:  # this chunk holds left padding: tell the cache each row's count
                    real = [max(0, b - max(a, longest - n)) for n in lengths]
                    mask = torch.zeros(len(group), b - a, dtype=torch.long)
                    for i, n in enumerate(real):
                        mask[i, b - a - n :] = 1
                    view.real_counts = real
                    mask = _to_device(mask, self.device)
                out = self.model(ids[:, a:b], attention_mask=mask, cache=view, logits_to_keep=1)
        return out.logits[:, -1]

    def _launch_decode(self, decoding: list[Request]) -> _Sampled:
        """Queue one decode step for these requests (inputs: their last tokens, on the device)."""
        rows = [r.row for r in decoding]
        if self._graph is not None:
            logits = self._graph(rows)
        else:
            with self._forms:  # rows 0..width-1: a slice of the cache, updated in place
                width = max(rows) + 1
                logits = self._forward(self._next[:width], width)
        if rows != list(range(logits.shape[0])):
            logits = logits.index_select(0, self._row_index(rows))
        sampled = self._sample(decoding, logits)
        self._next.index_copy_(0, self._row_index(rows), sampled.tokens[:, None])
        for r in decoding:
            r.in_flight = 1
        return sampled

    def _row_index(self, rows: list[int]) -> torch.Tensor:
        key = tuple(rows)
        if self._row_index_cache[0] != key:
            self._row_index_cache = (key, _to_device(torch.tensor(rows), self.device))
        return self._row_index_cache[1]

    def _decode_view(self, width: int):  # noqa: ANN202
        idle = [r for r in range(width) if not self.cache.in_use[r]]
        return self.cache.view(range(width), idle=idle)

    def _eager_forward(self, tokens: torch.Tensor, width: int) -> torch.Tensor:
        return self.model(tokens, cache=self._decode_view(width)).logits[:, -1]

    def _capture_graph(self):  # noqa: ANN202
        """The decode step captured as a CUDA graph (see graphs.py); eager, with a warning, off CUDA.

        With ``experts="auto"`` both sync-free MoE forms are captured where both run, and the one whose
        replay is faster on this GPU and batch is kept (``self.graph_ms`` has the timings).
        """
        if self.device.type != "cuda":
            warnings.warn("cuda_graph=True needs a CUDA device; decoding eagerly", stacklevel=3)
            return None
        from openm1.generate.graphs import GraphedDecode

        candidates = [self._experts_decode]
        if self._experts_auto and self._experts_decode == "grouped":
            candidates.append("dense")
        failures, graphs = [], {}

        def capture(experts: str) -> None:
            try:
                graphs[experts] = GraphedDecode(self.model, self.cache, InferenceForms(self.model, experts))
            except Exception as e:  # noqa: BLE001 - a slower engine beats none
                failures.append(f"{experts} experts: {type(e).__name__}: {e}")
                self._reset_rows()

        for experts in candidates:
            capture(experts)
        if not graphs and "dense" not in candidates:
            capture("dense")  # the fallback: plain batched matmuls
        if not graphs:
            warnings.warn(
                f"CUDA graph capture failed ({'; '.join(failures)}); decoding eagerly", stacklevel=3
            )
            return None
        if len(graphs) > 1:
            self.graph_ms = {name: _replay_ms(g, self.cache) for name, g in graphs.items()}
            self._reset_rows()
        self.experts_graph = min(graphs, key=lambda name: self.graph_ms.get(name, 0.0))
        return graphs[self.experts_graph]

    def _reset_rows(self) -> None:
        for row in range(self.cache.num_rows):
            self.cache.reset_row(row)

    def _compiled_forward(self) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The decode step under ``torch.compile`` on CUDA; eager elsewhere or if compilation fails."""
        if self.device.type != "cuda":
            warnings.warn("compile=True needs a CUDA device; decoding eagerly on the CPU", stacklevel=3)
            return self._eager_forward
        compiled = torch.compile(self.model, dynamic=True)

        def forward(tokens: torch.Tensor, width: int) -> torch.Tensor:
            try:
                return compiled(tokens, cache=self._decode_view(width)).logits[:, -1]
            except Exception as e:  # noqa: BLE001 - fall back rather than lose the request
                warnings.warn(
                    f"torch.compile failed ({type(e).__name__}: {e}); decoding eagerly", stacklevel=2
                )
                self._forward = self._eager_forward
                return self._eager_forward(tokens, width)

        return forward

    # ------------------------------------------------------------------ sampling and stop rules
    def _sample(self, reqs: list[Request], logits: torch.Tensor) -> _Sampled:
        """Pick each row's token and its log-prob on the device; start copying them to the host."""
        logits = logits.float()
        if self.logits_hook is not None:
            logits = self.logits_hook(logits, [r.request_id for r in reqs])
        dev = logits.device
        params = [r.params for r in reqs]
        if all(p.greedy for p in params):
            tokens = logits.argmax(dim=-1)  # no per-row parameters to ship to the device
        else:
            draws = [0.0 if r.params.greedy else float(torch.rand((), generator=r.generator)) for r in reqs]
            columns = [[p.temperature, p.top_k, p.top_p] for p in params]
            per_row = torch.tensor(columns, dtype=torch.float64).T.contiguous()
            per_row = torch.cat((per_row, torch.tensor([draws], dtype=torch.float64)))
            per_row = _to_device(per_row, dev)
            tokens = sample(
                logits,
                per_row[0].float(),
                per_row[1].long(),
                per_row[2].float(),
                per_row[3],
                all_greedy=False,
                filtered=any(p.top_k > 0 or p.top_p < 1 for p in params),
            )
        logp = torch.log_softmax(logits, dim=-1)
        chosen = logp.gather(-1, tokens[:, None])
        n_top = max(p.logprobs for p in params)
        parts = [tokens[:, None].double(), chosen.double()]
        if n_top:
            top = logp.topk(n_top, dim=-1)
            parts += [top.indices.double(), top.values.double()]
        # one device-to-host copy for all of it (float64 holds every token id exactly)
        packed = torch.cat(parts, dim=1)
        done = None
        if dev.type == "cuda":
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            host.copy_(packed, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        else:
            host = packed
        return _Sampled(list(reqs), tokens, host, done, n_top)

    def _collect(self, sampled: _Sampled) -> list[TokenEvent]:
        """Read a sampled step back and run the stop rules (requests that stopped meanwhile are skipped)."""
        if sampled.done is not None:
            sampled.done.synchronize()
        rows = sampled.host.tolist()
        now = time.perf_counter()
        n_top = sampled.n_top
        events = []
        for req, row in zip(sampled.reqs, rows, strict=True):
            req.in_flight = 0
            if req.finish_reason is not None or self.running.get(req.request_id) is not req:
                continue  # it stopped (or was aborted) at an earlier step: this token was one too many
            alts = None
            n = req.params.logprobs
            if n:
                ids, values = row[2 : 2 + n_top], row[2 + n_top :]
                alts = {int(t): v for t, v in zip(ids[:n], values[:n], strict=True)}
            events.append(self._accept(req, int(row[0]), row[1], alts, now))
        return events

    def _accept(
        self, req: Request, token: int, logprob: float, alts: dict[int, float] | None, now: float
    ) -> TokenEvent:
        p = req.params
        if not req.token_ids:
            req.t_first = now
        req.token_ids.append(token)
        req.logprobs.append(logprob)
        if alts is not None:
            req.top_logprobs.append(alts)
        reason = None
        if token in req.stop_ids:
            reason = "stop"
        elif req.detok is not None:
            before = len(req.text)
            req.text += req.detok.push(token)
            if p.stop:
                reason = self._cut_at_stop(req, before)
        if reason is None and p.repetition_window is not None:
            req.confident_run = req.confident_run + 1 if logprob > math.log(p.repetition_threshold) else 0
            if req.confident_run >= p.repetition_window:
                reason = "repetition"
        if reason is None and len(req.token_ids) >= p.max_new_tokens:
            reason = "length"
        if reason is not None:
            if reason != "stop" and req.detok is not None:
                req.text += req.detok.flush()
            self._finish(req, reason, now)
        hold = 0 if reason or not p.stop else max(len(s) for s in p.stop) - 1
        visible = max(req.emitted, len(req.text) - hold)
        delta, req.emitted = req.text[req.emitted : visible], visible
        return TokenEvent(req.request_id, token, logprob, alts, delta, reason is not None, reason)

    @staticmethod
    def _cut_at_stop(req: Request, before: int) -> str | None:
        window_start = max(0, before - max(len(s) for s in req.params.stop) + 1)
        hits = [i for s in req.params.stop if (i := req.text.find(s, window_start)) >= 0]
        if not hits:
            return None
        req.text = req.text[: min(hits)]
        req.emitted = min(req.emitted, len(req.text))
        return "stop"

    def _finish(self, req: Request, reason: str, now: float) -> None:
        req.finish_reason, req.t_end = reason, now
        self.running.pop(req.request_id, None)
        self.cache.free(req.row)
        self._finished[req.request_id] = req.result()

    # ------------------------------------------------------------------ convenience
    def generate(
        self,
        prompts: list[list[int] | str],
        params: SamplingParams | list[SamplingParams] | None = None,
        on_event: Callable[[TokenEvent], None] | None = None,
    ) -> list[GenerationResult]:
        """Run these prompts to completion (through the same continuous-batching loop) and return
        their results in order."""
        if not isinstance(params, list):
            params = [params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling parameter sets")
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, params, strict=True)]
        pending = set(ids)
        results: dict[str, GenerationResult] = {}
        while pending:
            for ev in self.step():
                if on_event is not None:
                    on_event(ev)
                if ev.finished and ev.request_id in pending:
                    pending.discard(ev.request_id)
                    results[ev.request_id] = self._finished.pop(ev.request_id)
        return [results[i] for i in ids]


def _replay_ms(graph, cache: GenerationCache, repeats: int = 20) -> float:  # noqa: ANN001
    """Mean ms of a decode graph's replays (every row restarted each time, so no slot overflows)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(repeats + 3):
        if i == 3:
            start.record()
        cache.lengths_t.zero_()
        graph.graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def _config_eos(config) -> list[int]:  # noqa: ANN001
    eos = config.eos_token_id
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)
