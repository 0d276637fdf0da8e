"""``openm1 generate MODEL``: generate from prompts on the command line or in a JSONL file, streamed."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from openm1.generate.loading import add_graph_options
from openm1.generate.sampling import REPETITION_THRESHOLD, REPETITION_WINDOW, SamplingParams

PARAM_FIELDS = {f.name for f in fields(SamplingParams)}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate text with a checkpoint folder or a preset (random weights)",
        description="Generate from one or more prompts with continuous batching; a single prompt streams "
        "to the terminal. MODEL is a checkpoint folder (its own tokenizer and chat template) or a preset "
        "name (random weights, byte-level tokenizer).",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint folder or preset name (tiny, small, 1b, ...)")
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompt text(s)")
    p.add_argument(
        "--file",
        metavar="JSONL",
        help='prompts, one JSON per line: {"prompt": "..."} or {"messages": [...]}, optionally with '
        "sampling fields (max_new_tokens, temperature, top_k, top_p, seed, stop)",
    )
    p.add_argument("--chat", action="store_true", help="wrap command-line prompts in the chat template")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument(
        "--repetition-window",
        type=int,
        default=REPETITION_WINDOW,
        help=f"early truncation after N confident tokens (default {REPETITION_WINDOW}; 0 = off)",
    )
    p.add_argument("--repetition-threshold", type=float, default=REPETITION_THRESHOLD)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="fp32, bf16, fp16 (default: as stored; presets fp32)")
    p.add_argument("--max-batch", type=int, default=8, help="rows decoded together (default 8)")
    p.add_argument("--max-len", type=int, default=4096, help="tokens per row: prompt + answer (default 4096)")
    p.add_argument(
        "--prefill-chunk", type=int, default=4096, help="tokens per prefill forward (default 4096)"
    )
    add_graph_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON result per prompt instead")
    p.set_defaults(func=run)


def read_jsonl(path: str | Path) -> list[dict]:
    """Requests from a JSONL file; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not valid JSON ({e.msg}); write one JSON object per line") from e
        if isinstance(item, str):
            item = {"prompt": item}
        if not isinstance(item, dict) or ("prompt" in item) == ("messages" in item):
            raise ValueError(f'{path}:{n}: give exactly one of "prompt" (text) or "messages" (chat)')
        unknown = set(item) - PARAM_FIELDS - {"prompt", "messages", "id"}
        if unknown:
            raise ValueError(
                f"{path}:{n}: unknown field(s) {sorted(unknown)}; allowed: {sorted(PARAM_FIELDS)}"
            )
        out.append(item)
    if not out:
        raise ValueError(f"{path} holds no prompts")
    return out


def run(args: argparse.Namespace) -> int:
    from openm1.generate.loading import engine_from_args, load_model

    base = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop,
        ignore_eos=args.ignore_eos,
        repetition_window=args.repetition_window or None,
        repetition_threshold=args.repetition_threshold,
    )
    items = [
        {"messages": [{"role": "user", "content": t}]} if args.chat else {"prompt": t} for t in args.prompts
    ]
    if args.file:
        items += read_jsonl(args.file)
    if not items:
        raise ValueError("no prompts: give PROMPT arguments or --file prompts.jsonl")
    params = [
        SamplingParams(**{**base, **{k: v for k, v in it.items() if k in PARAM_FIELDS}}) for it in items
    ]
    for p in params:
        p.validate()

    t0 = time.perf_counter()
    model, tok, name = load_model(args.model, args.device, args.dtype)
    print(
        f"loaded {name} in {time.perf_counter() - t0:.1f} s ({model.num_parameters() / 1e6:.1f}M parameters, "
        f"{next(model.parameters()).device})",
        file=sys.stderr,
    )
    engine = engine_from_args(model, tok, args)
    prompts = [
        tok.chat_prompt(it["messages"]) if "messages" in it else tok.encode(it["prompt"]) for it in items
    ]
    stream = len(prompts) == 1 and not args.json

    def on_event(ev) -> None:  # noqa: ANN001
        if stream and ev.text:
            sys.stdout.write(ev.text)
            sys.stdout.flush()

    start = time.perf_counter()
    results = engine.generate(prompts, params, on_event=on_event)
    wall = time.perf_counter() - start
    for i, (item, r) in enumerate(zip(items, results, strict=True)):
        if args.json:
            print(
                json.dumps(
                    {
                        "id": item.get("id", i),
                        "text": r.text,
                        "token_ids": r.token_ids,
                        "logprobs": r.logprobs,
                        "finish_reason": r.finish_reason,
                        "prefill_ms": round(r.prefill_ms, 2),
                        "decode_tokens_per_s": round(r.decode_tokens_per_s, 1),
                    }
                )
            )
        elif stream:
            print()
        else:
            print(f"--- [{item.get('id', i)}] {r.finish_reason}, {len(r.token_ids)} tokens")
            print(r.text)
    s = engine.stats
    generated = sum(len(r.token_ids) for r in results)
    decode_rate = s["decode_tokens"] / s["decode_s"] if s["decode_s"] else 0.0
    print(
        f"{len(results)} prompt(s), {s['prefill_tokens']} prompt tokens prefilled in "
        f"{s['prefill_s'] * 1e3:.0f} ms, "
        f"{generated} tokens generated in {wall:.2f} s ({generated / wall:.1f} tokens/s overall, "
        f"decode {decode_rate:.1f} tokens/s); finish: {', '.join(r.finish_reason for r in results)}",
        file=sys.stderr,
    )
    return 0
