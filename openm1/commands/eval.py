"""``openm1 eval MODEL --bench FILE.jsonl ...``: pass@1 and pass@k on benchmark files (see
:mod:`openm1.eval.bench` for the row format), results as JSON and a Markdown table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from openm1.config import atomic_write_text


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint or preset on benchmark JSONL files (pass@1, pass@k)",
        description="Sample N answers per problem with the generation engine, check each with the "
        "row type's verifier (math: math-verify; mcq: the letter; code: tests in the sandbox; logic: the "
        "puzzle's exact verifier), and report pass@1 and pass@k (unbiased estimator). Malformed rows are "
        "reported with their line numbers and skipped. Row format: docs/pipeline.md.",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint folder or preset name (random weights)")
    p.add_argument(
        "--bench", action="append", required=True, metavar="FILE.jsonl", help="benchmark file (repeatable)"
    )
    p.add_argument("-n", "--samples", type=int, default=1, help="samples per problem (default 1)")
    p.add_argument(
        "-k", type=int, action="append", default=None, help="report pass@k (repeatable; default 1 and n)"
    )
    p.add_argument("--temperature", type=float, default=None, help="default 0 (greedy) for n=1, else 1.0")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batch", type=int, default=64, help="sequences decoded together (default 64)")
    p.add_argument("--no-chat", action="store_true", help="send prompts raw instead of in the chat template")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="fp32, bf16 (default: as stored)")
    p.add_argument("--out", metavar="FILE.json", help="write the full results (every sample) here")
    p.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from openm1.eval import EvalSettings, evaluate, format_table, load_bench
    from openm1.generate.loading import load_model

    n = args.samples
    temperature = args.temperature if args.temperature is not None else (0.0 if n == 1 else 1.0)
    ks = tuple(sorted(set(args.k or ([1, n] if n > 1 else [1]))))
    settings = EvalSettings(
        n=n,
        k=ks,
        temperature=temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        max_batch=args.max_batch,
        chat=not args.no_chat,
    ).validate()
    benches = []
    for path in args.bench:
        rows, bad = load_bench(path)
        benches.append((path, rows, bad))
    model, tok, name = load_model(args.model, args.device, args.dtype)
    report: dict[str, object] = {"model": name, "benchmarks": {}}
    for path, rows, bad in benches:
        result = evaluate(model, tok, rows, settings, malformed=bad)
        report["benchmarks"][Path(path).name] = result.to_dict(with_rows=args.out is not None)  # type: ignore[index]
        if not args.json:
            print(
                f"\n{Path(path).name}: {len(rows)} problems, {len(bad)} malformed rows, {result.seconds:.1f}s"
            )
            print(format_table(result, Path(path).stem))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(report, indent=1) + "\n")
    if args.json:
        slim = {
            k: {"scores": v["scores"], "by_type": v["by_type"], "malformed": v["malformed"]}
            for k, v in report["benchmarks"].items()
        }  # type: ignore[union-attr]
        json.dump({"model": name, "benchmarks": slim}, sys.stdout, indent=1)
        print()
    return 0
