"""The OpenAI-compatible server, driven by the official ``openai`` client against a live uvicorn on
127.0.0.1 (a tiny random model with the byte tokenizer; a logits hook makes answers predictable)."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from openm1.generate import ByteTokenizer, Engine  # noqa: E402
from openm1.generate.reasoning import ReasoningSplitter, split_reasoning  # noqa: E402
from openm1.generate.server import create_app  # noqa: E402
from tests.generate.helpers import tiny_model  # noqa: E402

SCRIPT = "<think>hmm, 2+2</think>The answer is 4."
NAME = "tiny-test"
TOK = ByteTokenizer(512)
SCRIPT_IDS = TOK.encode(SCRIPT)  # <think> and </think> are single tokens


def script_text(n: int) -> str:
    return TOK.decode(SCRIPT_IDS[:n])


def scripted_hook(tok: ByteTokenizer):
    """Every request writes SCRIPT then </s>: the next token follows the text generated so far."""
    script = tok.encode(SCRIPT) + tok.eos_token_ids

    def hook(logits, request_ids):
        out = torch.full_like(logits, -20.0)
        for i, rid in enumerate(request_ids):
            n = hook.counts.get(rid, 0)
            hook.counts[rid] = n + 1
            out[i, script[min(n, len(script) - 1)]] = 20.0
            out[i, 65] = 0.0  # a runner-up for top_logprobs, too unlikely (e^-20) to be sampled
        return out

    hook.counts = {}
    return hook


def server_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server():
    tok = ByteTokenizer(512)
    model = tiny_model(0, vocab_size=512)
    engine = Engine(model, tok, max_batch=4, max_len=256, logits_hook=scripted_hook(tok))
    app = create_app(engine, tok, NAME, max_request_bytes=20_000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    server_url.engine = engine
    yield server_url(port)
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def test_models(client):
    assert [m.id for m in client.models.list().data] == [NAME]


def test_chat_splits_reasoning_and_reports_usage(client):
    r = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "2+2?"}], max_tokens=100
    )
    msg = r.choices[0].message
    assert msg.content == "The answer is 4."
    assert msg.model_extra["reasoning_content"] == "hmm, 2+2"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(SCRIPT_IDS) + 1  # and </s>


def test_chat_streaming_gives_the_same_answer(client):
    stream = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "2+2?"}], max_tokens=100, stream=True
    )
    content, reasoning, reasons = "", "", []
    for chunk in stream:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        content += d.content or ""
        reasoning += (d.model_extra or {}).get("reasoning_content") or ""
        reasons.append(chunk.choices[0].finish_reason)
    assert (reasoning, content) == ("hmm, 2+2", "The answer is 4.")
    assert reasons[-1] == "stop"


def test_completion_with_logprobs_and_length_limit(client):
    r = client.completions.create(model=NAME, prompt="Q:", max_tokens=5, logprobs=2)
    c = r.choices[0]
    assert c.text == script_text(5) == "<think>hmm," and c.finish_reason == "length"
    assert c.logprobs.tokens == ["<think>", "h", "m", "m", ","]
    expected = -math.log1p(math.exp(-20) + 510 * math.exp(-40))  # the hook's logits: 20, 0, -20 elsewhere
    assert all(abs(lp - expected) < 1e-5 for lp in c.logprobs.token_logprobs)
    assert all(len(t) == 2 and "A" in t for t in c.logprobs.top_logprobs)
    assert c.logprobs.text_offset == [0, 7, 8, 9, 10]


def test_chat_logprobs(client):
    r = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=3, logprobs=True, top_logprobs=2
    )
    entries = r.choices[0].logprobs.content
    assert [e.token for e in entries] == ["<think>", "h", "m"]
    assert all(len(e.top_logprobs) == 2 for e in entries)


def test_streamed_completion_and_stop_string(client):
    text = "".join(
        ch.choices[0].text
        for ch in client.completions.create(
            model=NAME, prompt="x", max_tokens=60, stop=["answer"], stream=True
        )
        if ch.choices
    )
    assert text == "<think>hmm, 2+2</think>The "


def test_concurrent_requests_are_batched_and_all_answered(server):
    async def run():
        aclient = openai.AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
        calls = [
            aclient.chat.completions.create(
                model=NAME, messages=[{"role": "user", "content": f"q{i}"}], max_tokens=60
            )
            for i in range(6)
        ]
        return await asyncio.gather(*calls)

    results = asyncio.run(run())
    assert all(r.choices[0].message.content == "The answer is 4." for r in results)
    assert server_url.engine.stats["peak_batch"] >= 2  # they shared decode steps


def _post(server, path, body: bytes):
    req = urllib.request.Request(server + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(
    "body, param",
    [
        (b'{"model": "tiny-test", "messages": [', None),  # malformed JSON
        (json.dumps({"model": "gpt-9", "prompt": "x"}).encode(), "model"),
        (json.dumps({"model": NAME, "prompt": ""}).encode(), "prompt"),
        (json.dumps({"model": NAME, "prompt": "x", "temperature": -1}).encode(), "temperature"),
        (json.dumps({"model": NAME, "prompt": "x", "top_p": 0}).encode(), "top_p"),
        (json.dumps({"model": NAME, "prompt": "x", "max_tokens": 10_000}).encode(), "max_tokens"),
        (json.dumps({"model": NAME, "prompt": "y" * 300}).encode(), "prompt"),
        (
            json.dumps({"model": NAME, "messages": [{"role": "user", "content": "y" * 300}]}).encode(),
            "messages",
        ),
        (json.dumps({"model": NAME, "prompt": "x" * 30_000}).encode(), None),  # oversized body
        (json.dumps({"model": NAME, "messages": []}).encode(), "messages"),
    ],
)
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, client, body, param):
    path = "/v1/chat/completions" if b"messages" in body else "/v1/completions"
    status, err = _post(server, path, body)
    assert status == 400
    assert set(err["error"]) == {"message", "type", "param", "code"}
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["message"]
    assert err["error"]["param"] == param
    assert client.completions.create(model=NAME, prompt="ok", max_tokens=2).choices[0].text == script_text(2)


def test_openai_client_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "x"}], temperature=5)
    assert info.value.body["param"] == "temperature"


def test_chat_page_is_served(server):
    with urllib.request.urlopen(server + "/") as resp:
        page = resp.read().decode()
    assert "/v1/chat/completions" in page and "reasoning_content" in page and NAME in page


@pytest.mark.parametrize("cut", [1, 3, 5, 8])
def test_reasoning_splitter_handles_tags_cut_across_deltas(cut):
    text = "<think>a<b</think>c</th"
    s = ReasoningSplitter()
    pieces = []
    for i in range(0, len(text), cut):
        pieces += s.feed(text[i : i + cut])
    pieces += s.flush()
    assert "".join(t for k, t in pieces if k == "reasoning") == "a<b"
    assert "".join(t for k, t in pieces if k == "content") == "c</th"
    assert split_reasoning("x</think>y", start_in_reasoning=True) == ("x", "y")
    assert split_reasoning("plain") == (None, "plain")
