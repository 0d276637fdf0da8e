"""``openm1 flops``: theoretical FLOPs to generate N tokens, MiniMax-M1 against DeepSeek-R1 (Figure 1).

A plot is written only when ``--plot PATH.png`` is given, so the verb never leaves files behind
unasked. The formulas and the choice of convention are in ``docs/flops.md``.
"""

from __future__ import annotations

import argparse
import json

from openm1.analysis.flops import (
    CLAIM_64K,
    CLAIM_100K,
    CONVENTIONS,
    DEFAULT_CONVENTION,
    DEFAULT_LENGTHS,
    Convention,
    Row,
    claims,
    compare,
    get_convention,
    m1_token_cost,
    plot_flops,
    r1_token_cost,
)
from openm1.analysis.units import format_count, format_tokens, parse_count, parse_counts


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "flops",
        help="inference FLOPs to generate N tokens: MiniMax-M1 vs DeepSeek-R1",
        description="Theoretical FLOPs (2 per multiply-add) to generate N tokens with MiniMax-M1 and "
        "DeepSeek-R1, their ratio, and the paper's Figure 1 claims (<50% at 64K, about 25% at 100K) "
        "checked under a stated convention. See docs/flops.md.",
    )
    p.add_argument(
        "--lengths",
        default=",".join(format_tokens(n) for n in DEFAULT_LENGTHS),
        help="comma-separated generation lengths, suffixes K=1024 and M=1024^2 (default %(default)s)",
    )
    p.add_argument(
        "--convention",
        default=DEFAULT_CONVENTION,
        help=f"one of {', '.join(['paper', *CONVENTIONS])} (default {DEFAULT_CONVENTION}, alias 'paper')",
    )
    p.add_argument("--no-lm-head", action="store_true", help="leave the LM head out of both models")
    p.add_argument(
        "--prompt", default="0", help="prompt tokens every generated token also attends to (default 0)"
    )
    p.add_argument("--plot", metavar="PATH.png", help="also write a PNG of cumulative FLOPs and the ratio")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    convention = get_convention(args.convention, lm_head=not args.no_lm_head)
    lengths = parse_counts(args.lengths)
    prompt = 0 if str(args.prompt).strip() in ("", "0") else parse_count(args.prompt)
    rows = compare(lengths, convention, prompt)
    others = {
        name: [r.ratio for r in compare(lengths, get_convention(name, convention.lm_head), prompt)]
        for name in CONVENTIONS
    }
    verdicts = {name: claims(get_convention(name, convention.lm_head), prompt) for name in CONVENTIONS}
    plot = plot_flops(args.plot, convention, max(128 * 1024, max(lengths)), prompt) if args.plot else None
    if args.json:
        print(json.dumps(report(convention, prompt, rows, others, verdicts, plot), indent=2))
    else:
        _print(convention, prompt, rows, others, verdicts, plot)
    return 0


def report(
    convention: Convention,
    prompt: int,
    rows: list[Row],
    others: dict[str, list[float]],
    verdicts: dict[str, dict],
    plot: str | None,
) -> dict:
    """Everything ``flops`` shows, as plain JSON-ready data."""
    m1, r1 = m1_token_cost(convention=convention), r1_token_cost(convention=convention)
    return {
        "convention": {
            "name": convention.name,
            "mla": convention.mla,
            "span": convention.span,
            "lm_head": convention.lm_head,
        },
        "prompt": prompt,
        "per_token": {
            "m1": {"constant": m1.constant, "per_position": m1.per_position},
            "r1": {"constant": r1.constant, "per_position": r1.per_position},
        },
        "rows": [r.to_dict() for r in rows],
        "ratios_by_convention": {
            name: {str(r.length): x for r, x in zip(rows, ratios, strict=True)}
            for name, ratios in others.items()
        },
        "claims": verdicts[convention.name],
        "claims_by_convention": verdicts,
        "plot": plot,
    }


def _print(
    convention: Convention,
    prompt: int,
    rows: list[Row],
    others: dict[str, list[float]],
    verdicts: dict[str, dict],
    plot: str | None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m1, r1 = m1_token_cost(convention=convention), r1_token_cost(convention=convention)
    console.print(f"convention {convention.describe()}" + (f"; prompt {prompt:,} tokens" if prompt else ""))
    console.print(
        f"per generated token attending to p positions: M1 {format_count(m1.constant)} + "
        f"{format_count(m1.per_position)} p FLOPs, R1 {format_count(r1.constant)} + "
        f"{format_count(r1.per_position)} p FLOPs"
    )
    table = Table(title="FLOPs to generate N tokens (2 per multiply-add)")
    table.add_column("N", justify="right")
    table.add_column("M1 FLOPs", justify="right")
    table.add_column("R1 FLOPs", justify="right")
    table.add_column("M1/R1\n" + convention.name.replace("-", "\n"), justify="right", style="bold")
    rest = [name for name in CONVENTIONS if name != convention.name]
    for name in rest:
        table.add_column("M1/R1\n" + name.replace("-", "\n"), justify="right", style="dim")
    for i, r in enumerate(rows):
        cells = [
            format_tokens(r.length),
            format_count(r.m1_flops),
            format_count(r.r1_flops),
            f"{r.ratio:.1%}",
        ]
        table.add_row(*cells, *(f"{others[name][i]:.1%}" for name in rest))
    console.print(table)

    v = verdicts[convention.name]
    ok = v["below_half_at_64k"] and v["about_quarter_at_100k"]
    console.print(
        f"M1/R1 at {format_tokens(CLAIM_64K)}: {v['ratio_64k']:.1%}, at {format_tokens(CLAIM_100K)}: "
        f"{v['ratio_100k']:.1%} ({convention.name})"
    )
    console.print(
        "[bold]verdict[/]: the paper's claims (<50% at 64K, about 25% at 100K) "
        + ("[green]hold[/]" if ok else "[red]do not both hold[/]")
        + f" under {convention.name}: {v['ratio_64k']:.1%} and {v['ratio_100k']:.1%}"
    )
    for name in rest:
        w = verdicts[name]
        console.print(f"  {name}: {w['ratio_64k']:.1%} at 64K, {w['ratio_100k']:.1%} at 100K", style="dim")
    if plot:
        console.print(f"plot written to {plot}")
