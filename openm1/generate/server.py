"""An OpenAI-compatible HTTP server over the engine: ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions`` (streamed as server-sent events or not), log-probs, ``reasoning_content``.

The server is a thin layer: it validates and tokenizes, submits to the :class:`EngineRunner` (whose
thread batches every request in flight together) and formats the events. Bad requests get HTTP 400
with OpenAI's error body ``{"error": {"message", "type", "param", "code"}}`` and the server goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("the server needs FastAPI and uvicorn: pip install 'openm1[serve]'") from e

from openm1.generate.engine import Engine, TokenEvent
from openm1.generate.reasoning import ReasoningSplitter, split_reasoning
from openm1.generate.runner import EngineRunner
from openm1.generate.sampling import SamplingParams
from openm1.generate.webpage import chat_page

MAX_REQUEST_BYTES = 4 * 2**20


class APIError(Exception):
    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
    ) -> None:  # noqa: A002 - OpenAI's field name
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.type = message, param, code, status, type

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


# ---------------------------------------------------------------------- request bodies
class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False
    repetition_window: int | None = Field(default=3000, ge=1)
    repetition_threshold: float = Field(default=0.99, gt=0, lt=1)


class CompletionRequest(_Common):
    prompt: str | list[int] | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False


class ChatRequest(_Common):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


# ---------------------------------------------------------------------- the app
def create_app(
    engine: Engine,
    tokenizer,
    served_model_name: str,  # noqa: ANN001 - a tokenizer
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> FastAPI:
    runner = EngineRunner(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        runner.start()
        yield
        runner.stop()

    app = FastAPI(title="openm1", lifespan=lifespan)
    app.state.runner = runner
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            return APIError(
                f"the request body is not valid JSON: {err.get('msg')}", code="invalid_json"
            ).response()
        param = ".".join(loc) or None
        return APIError(
            f"{param or 'body'}: {err.get('msg', 'invalid value')}", param=param, code="invalid_value"
        ).response()

    @app.middleware("http")
    async def _limit_size(request: Request, call_next):  # noqa: ANN001, ANN202
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_request_bytes:
            return APIError(
                f"the request body has {size} bytes; the limit is {max_request_bytes}",
                code="request_too_large",
            ).response()
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return chat_page(served_model_name)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": served_model_name,
                    "object": "model",
                    "created": created,
                    "owned_by": "openm1",
                    "max_model_len": engine.max_len,
                }
            ],
        }

    def check_common(req: _Common) -> None:
        if req.model != served_model_name:
            raise APIError(
                f"the model {req.model!r} does not exist; this server serves {served_model_name!r}",
                param="model",
                code="model_not_found",
            )
        if req.n != 1:
            raise APIError("n must be 1 (send several requests for several answers)", param="n")
        if req.presence_penalty or req.frequency_penalty:
            raise APIError(
                "presence_penalty and frequency_penalty are not supported", param="presence_penalty"
            )

    def make_params(
        req: _Common,
        prompt_len: int,
        max_tokens: int | None,
        default_max: int,
        logprobs: int,
        prompt_param: str,
    ) -> SamplingParams:
        room = engine.max_len - prompt_len
        if room < 1:
            raise APIError(
                f"the prompt has {prompt_len} tokens; this model's maximum context is "
                f"{engine.max_len} tokens including the answer",
                param=prompt_param,
                code="context_length_exceeded",
            )
        max_new = max_tokens if max_tokens is not None else min(default_max, room)
        if max_new > room:
            raise APIError(
                f"the prompt has {prompt_len} tokens and max_tokens is {max_new}: more than the "
                f"maximum context of {engine.max_len}; lower max_tokens or shorten the prompt",
                param="max_tokens",
                code="context_length_exceeded",
            )
        params = SamplingParams(
            max_new_tokens=max_new,
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            seed=req.seed,
            stop=req.stop or [],
            ignore_eos=req.ignore_eos,
            logprobs=logprobs,
            repetition_window=req.repetition_window,
            repetition_threshold=req.repetition_threshold,
        )
        try:
            return params.validate(engine.config.vocab_size)
        except ValueError as e:
            raise APIError(str(e), param=str(e).split()[0]) from None

    async def first_event(out: asyncio.Queue) -> TokenEvent:
        item = await out.get()
        if isinstance(item, ValueError):
            raise APIError(str(item))
        if isinstance(item, BaseException):
            raise APIError(str(item), status=500, type="server_error")
        return item

    async def events(rid: str, out: asyncio.Queue, first: TokenEvent) -> AsyncIterator[TokenEvent]:
        ev, done = first, False
        try:
            while True:
                yield ev
                if ev.finished:
                    done = True
                    return
                item = await out.get()
                if isinstance(item, BaseException):
                    raise item
                ev = item
        finally:
            if not done:
                runner.abort(rid)  # the client went away: free the row

    def token_text(token_id: int) -> str:
        return tokenizer.decode([token_id])

    # ------------------------------------------------------------------ completions
    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):  # noqa: ANN202
        check_common(req)
        if req.echo:
            raise APIError("echo is not supported", param="echo")
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise APIError("send one prompt per request", param="prompt")
            prompt = prompt[0]
        ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise APIError("the prompt is empty", param="prompt")
        if any(not 0 <= t < engine.config.vocab_size for t in ids):
            raise APIError(f"prompt token ids must be in [0, {engine.config.vocab_size})", param="prompt")
        params = make_params(req, len(ids), req.max_tokens, 16, req.logprobs or 0, "prompt")
        want_lp = req.logprobs is not None
        rid, out = runner.submit(ids, params)
        first = await first_event(out)
        cid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def lp_block(evs: list[TokenEvent], offset: int) -> dict | None:
            if not want_lp:
                return None
            offsets, pos = [], offset
            for e in evs:
                offsets.append(pos)
                pos += len(e.text)
            return {
                "tokens": [token_text(e.token_id) for e in evs],
                "token_logprobs": [e.logprob for e in evs],
                "top_logprobs": [{token_text(t): v for t, v in (e.top_logprobs or {}).items()} for e in evs],
                "text_offset": offsets,
            }

        def chunk(text: str, evs: list[TokenEvent], offset: int, reason: str | None) -> dict:
            return {
                "id": cid,
                "object": "text_completion",
                "created": now,
                "model": served_model_name,
                "choices": [
                    {"index": 0, "text": text, "logprobs": lp_block(evs, offset), "finish_reason": reason}
                ],
            }

        if req.stream:

            async def sse() -> AsyncIterator[str]:
                offset, n = 0, 0
                async for ev in events(rid, out, first):
                    n += 1
                    yield _sse(chunk(ev.text, [ev], offset, ev.finish_reason))
                    offset += len(ev.text)
                if (req.stream_options or {}).get("include_usage"):
                    yield _sse(
                        {
                            "id": cid,
                            "object": "text_completion",
                            "created": now,
                            "model": served_model_name,
                            "choices": [],
                            "usage": _usage(len(ids), n),
                        }
                    )
                yield "data: [DONE]\n\n"

            return StreamingResponse(sse(), media_type="text/event-stream")

        collected = [ev async for ev in events(rid, out, first)]
        body = chunk("".join(e.text for e in collected), collected, 0, collected[-1].finish_reason)
        body["usage"] = _usage(len(ids), len(collected))
        return body

    # ------------------------------------------------------------------ chat
    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):  # noqa: ANN202
        check_common(req)
        messages = []
        for i, m in enumerate(req.messages):
            if not isinstance(m.get("role"), str) or "content" not in m:
                raise APIError(f"messages[{i}] needs a 'role' and a 'content'", param=f"messages.{i}")
            messages.append({"role": m["role"], "content": _text_of(m["content"], i)})
        try:
            ids = tokenizer.chat_prompt(messages)
        except ValueError as e:
            raise APIError(str(e), param="messages") from None
        start_in_reasoning = tokenizer.decode(ids[-4:]).rstrip().endswith("<think>")
        top_n = req.top_logprobs or 0
        if top_n and not req.logprobs:
            raise APIError("top_logprobs needs logprobs: true", param="top_logprobs")
        max_tokens = req.max_completion_tokens or req.max_tokens
        params = make_params(req, len(ids), max_tokens, engine.max_len, top_n, "messages")
        rid, out = runner.submit(ids, params)
        first = await first_event(out)
        cid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def lp_entries(evs: list[TokenEvent]) -> list[dict]:
            def entry(t: int, v: float) -> dict:
                s = token_text(t)
                return {"token": s, "logprob": v, "bytes": list(s.encode("utf-8"))}

            return [
                {
                    **entry(e.token_id, e.logprob),
                    "top_logprobs": [entry(t, v) for t, v in (e.top_logprobs or {}).items()],
                }
                for e in evs
            ]

        def chunk(delta: dict, evs: list[TokenEvent], reason: str | None) -> dict:
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": now,
                "model": served_model_name,
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": {"content": lp_entries(evs)} if req.logprobs and evs else None,
                        "finish_reason": reason,
                    }
                ],
            }

        if req.stream:

            async def sse() -> AsyncIterator[str]:
                splitter, n = ReasoningSplitter(start_in_reasoning), 0
                yield _sse(chunk({"role": "assistant", "content": ""}, [], None))
                async for ev in events(rid, out, first):
                    n += 1
                    pieces = splitter.feed(ev.text) + (splitter.flush() if ev.finished else [])
                    deltas = [{"reasoning_content" if k == "reasoning" else "content": t} for k, t in pieces]
                    if not deltas and req.logprobs:
                        deltas = [{}]
                    for j, d in enumerate(deltas):
                        yield _sse(chunk(d, [ev] if j == 0 else [], None))
                    if ev.finished:
                        yield _sse(chunk({}, [], ev.finish_reason))
                if (req.stream_options or {}).get("include_usage"):
                    yield _sse(
                        {
                            "id": cid,
                            "object": "chat.completion.chunk",
                            "created": now,
                            "model": served_model_name,
                            "choices": [],
                            "usage": _usage(len(ids), n),
                        }
                    )
                yield "data: [DONE]\n\n"

            return StreamingResponse(sse(), media_type="text/event-stream")

        collected = [ev async for ev in events(rid, out, first)]
        reasoning, content = split_reasoning("".join(e.text for e in collected), start_in_reasoning)
        message = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        return {
            "id": cid,
            "object": "chat.completion",
            "created": now,
            "model": served_model_name,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": {"content": lp_entries(collected)} if req.logprobs else None,
                    "finish_reason": collected[-1].finish_reason,
                }
            ],
            "usage": _usage(len(ids), len(collected)),
        }

    return app


def _text_of(content: Any, i: int) -> str:
    """A message's text: a string, or OpenAI's list of parts of which only text parts are supported."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise APIError(
        f"messages[{i}].content must be a string or a list of text parts", param=f"messages.{i}.content"
    )


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
