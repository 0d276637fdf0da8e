"""``openm1 info``: parameter counts and per-sequence cache memory of a configuration, from shapes alone."""

from __future__ import annotations

import argparse
import json

from openm1.analysis.params import (
    PAPER_ACTIVE_PARAMS,
    PAPER_TOTAL_PARAMS,
    ParamCounts,
    SequenceMemory,
    count_params,
    sequence_memory,
)
from openm1.analysis.units import format_bytes, format_count, format_tokens, parse_count
from openm1.config import ModelConfig, preset

DEFAULT_PRESET = "minimax-m1"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="parameter counts and cache memory of a configuration",
        description="Exact parameter counts per component, total and active (per token), and the cache "
        "memory one sequence needs at a context length, against a pure-softmax model of the same shape. "
        "Computed from the configuration alone: no weights are loaded or allocated.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", metavar="NAME", help=f"a named configuration (default {DEFAULT_PRESET})")
    src.add_argument("--config", metavar="FOLDER", help="a checkpoint folder holding config.json")
    p.add_argument(
        "--context", default="1M", help="context length in tokens, e.g. 1048576, 128K, 1M (default 1M)"
    )
    p.add_argument("--dtype", default="bf16", help="dtype of the softmax KV cache (default bf16)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout instead")
    p.set_defaults(func=run)


def load_config(args: argparse.Namespace) -> tuple[ModelConfig, str]:
    """The configuration the arguments name, and a label saying where it came from."""
    if args.config:
        return ModelConfig.load(args.config), f"config:{args.config}"
    name = args.preset or DEFAULT_PRESET
    return preset(name), f"preset:{name}"


def run(args: argparse.Namespace) -> int:
    config, source = load_config(args)
    context = parse_count(args.context)
    params = count_params(config)
    memory = sequence_memory(config, context, args.dtype)
    if args.json:
        print(json.dumps(report(config, source, params, memory), indent=2))
    else:
        _print(config, source, params, memory)
    return 0


def report(config: ModelConfig, source: str, params: ParamCounts, memory: SequenceMemory) -> dict:
    """Everything ``info`` shows, as plain JSON-ready data."""
    return {
        "source": source,
        "layers": {
            "total": config.num_hidden_layers,
            "lightning": config.num_lightning_layers,
            "softmax": config.num_softmax_layers,
        },
        "params": params.to_dict(),
        "memory": memory.to_dict(),
        "paper": {
            "total": PAPER_TOTAL_PARAMS,
            "active": PAPER_ACTIVE_PARAMS,
            "total_rel_diff": params.total / PAPER_TOTAL_PARAMS - 1,
            "active_rel_diff": params.active / PAPER_ACTIVE_PARAMS - 1,
        },
    }


def _print(config: ModelConfig, source: str, params: ParamCounts, memory: SequenceMemory) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]{source}[/]: {config.num_hidden_layers} layers ({config.num_lightning_layers} lightning, "
        f"{config.num_softmax_layers} softmax), hidden {config.hidden_size}, "
        f"{config.num_attention_heads} heads x {config.head_dim} ({config.num_key_value_heads} KV), "
        f"{config.num_local_experts} experts top-{config.num_experts_per_tok} x {config.intermediate_size}, "
        f"vocab {config.vocab_size}"
    )

    table = Table(title="Parameters (no biases anywhere)")
    table.add_column("component")
    table.add_column("params", justify="right")
    table.add_column("exact", justify="right")
    table.add_column("share", justify="right")
    for name, n in params.components().items():
        note = " (tied)" if name == "lm_head" and config.tie_word_embeddings else ""
        table.add_row(name + note, format_count(n), f"{n:,}", f"{n / params.total:.2%}")
    table.add_section()
    for label, n in (
        ("total", params.total),
        ("total, no embed/head", params.total_without_embeddings),
        ("active per token, no embed/head (paper)", params.active),
        ("active per token, with embed/head", params.active_with_embeddings),
    ):
        table.add_row(f"[bold]{label}[/]", format_count(n), f"{n:,}", f"{n / params.total:.2%}")
    console.print(table)

    mem = Table(title=f"Cache memory of one sequence at {format_tokens(memory.context)} tokens")
    mem.add_column("what")
    mem.add_column("bytes", justify="right")
    mem.add_row("lightning state (float32, any length)", format_bytes(memory.lightning_state_bytes))
    mem.add_row(f"softmax KV ({memory.dtype})", format_bytes(memory.softmax_kv_bytes))
    mem.add_row("[bold]total[/]", format_bytes(memory.total_bytes))
    mem.add_section()
    mem.add_row(
        f"pure-softmax model of the same shape ({config.num_hidden_layers} softmax layers)",
        format_bytes(memory.pure_softmax_kv_bytes),
    )
    mem.add_row("[bold]saving[/]", f"{memory.saving_factor:.2f}x less")
    console.print(mem)

    d_total, d_active = params.total / PAPER_TOTAL_PARAMS - 1, params.active / PAPER_ACTIVE_PARAMS - 1
    line = (
        f"paper (MiniMax-M1): {format_count(PAPER_TOTAL_PARAMS, 1)} total, "
        f"{format_count(PAPER_ACTIVE_PARAMS, 1)} active"
    )
    if abs(d_total) < 0.5:
        line += (
            f"; this config: {format_count(params.total)} ({d_total:+.2%}), "
            f"{format_count(params.active)} active ({d_active:+.2%})"
        )
    else:
        line += " (this config is another size; the paper's figures are for --preset minimax-m1)"
    console.print(line)
