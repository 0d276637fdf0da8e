"""``openm1 plan``: memory per GPU and estimated step time of a parallel layout, and layouts that fit.

Arithmetic only (no GPU, no weights); the formulas and assumptions are in ``docs/scale.md`` and
:mod:`openm1.analysis.plan`.
"""

from __future__ import annotations

import argparse
import json

from openm1.analysis.plan import (
    GPUS,
    Assumptions,
    Layout,
    LayoutError,
    Plan,
    get_gpu,
    min_gpus,
    plan,
    suggest,
)
from openm1.analysis.units import format_bytes, format_count, parse_count
from openm1.commands.info import DEFAULT_PRESET, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="memory per GPU and step time of a parallel layout; suggests one that fits",
        description="For a configuration, a GPU type and count and a layout (FSDP, expert, tensor, "
        "context degrees), the memory per GPU (weights, gradients, optimizer state, FSDP buffers, "
        "activations, rollout caches), an estimated step time from FLOPs and bandwidth, whether it fits, "
        "and the fastest layouts that do. See docs/scale.md for the formulas.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", metavar="NAME", help=f"a named configuration (default {DEFAULT_PRESET})")
    src.add_argument("--config", metavar="FOLDER", help="a checkpoint folder holding config.json")
    p.add_argument("--gpu", default="H800", help=f"GPU type: {', '.join(GPUS)} (default H800)")
    p.add_argument("--gpus", type=int, default=512, help="number of GPUs (default 512, as MiniMax used)")
    p.add_argument("--fsdp", type=int, help="FSDP shard degree (default: GPUs / (tp x cp x replicate))")
    p.add_argument("--ep", type=int, default=1, help="expert-parallel degree (default 1)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (default 1)")
    p.add_argument("--cp", type=int, default=1, help="context-parallel degree (default 1)")
    p.add_argument("--replicate", type=int, default=1, help="HSDP replicas of the FSDP group (default 1)")
    p.add_argument("--seq-len", default="8K", help="training sequence length, e.g. 8192 or 8K (default 8K)")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per data-parallel rank (default 1)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument(
        "--no-ac", action="store_true", help="without activation checkpointing (default: checkpoint blocks)"
    )
    p.add_argument("--rollout-len", default="0", help="RL rollout tokens per sequence, e.g. 80K (default 0)")
    p.add_argument("--rollout-seqs", type=int, default=0, help="rollout sequences per GPU (default 0)")
    p.add_argument("--mfu", type=float, default=Assumptions.mfu, help="fraction of bf16 peak (default 0.4)")
    p.add_argument(
        "--link-efficiency",
        type=float,
        default=Assumptions.link_efficiency,
        help="fraction of link bandwidth collectives reach (default 0.7)",
    )
    p.add_argument("--top", type=int, default=5, help="suggested layouts to list (default 5)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout instead")
    p.set_defaults(func=run)


def _layout(args: argparse.Namespace) -> Layout:
    inner = args.tp * args.cp * args.replicate
    if min(args.tp, args.cp, args.replicate, args.ep, args.gpus) < 1:
        raise LayoutError("--gpus, --tp, --cp, --ep and --replicate must be positive integers")
    fsdp = args.fsdp
    if fsdp is None:
        if args.gpus % inner:
            raise LayoutError(
                f"tp x cp x replicate = {inner} does not divide the {args.gpus} GPUs; "
                "choose degrees whose product divides --gpus"
            )
        fsdp = args.gpus // inner
    return Layout(fsdp=fsdp, ep=args.ep, tp=args.tp, cp=args.cp, replicate=args.replicate)


def run(args: argparse.Namespace) -> int:
    from openm1.analysis.plan import Workload, validate

    config, source = load_config(args)
    gpu = get_gpu(args.gpu)
    rollout_len = 0 if str(args.rollout_len).strip() == "0" else parse_count(args.rollout_len)
    workload = Workload(
        seq_len=parse_count(args.seq_len),
        micro_batch=args.micro_batch,
        grad_accum=args.grad_accum,
        activation_checkpointing=not args.no_ac,
        rollout_len=rollout_len,
        rollout_seqs=args.rollout_seqs,
    )
    if not 0 < args.mfu <= 1 or not 0 < args.link_efficiency <= 1:
        raise ValueError("--mfu and --link-efficiency are fractions in (0, 1]")
    assumptions = Assumptions(mfu=args.mfu, link_efficiency=args.link_efficiency)
    layout = _layout(args)
    validate(config, layout, workload, args.gpus)
    chosen = plan(config, gpu, layout, workload, assumptions, source)
    best = suggest(config, gpu, args.gpus, workload, assumptions, top=args.top, config_name=source)
    fewest = None if best else min_gpus(config, gpu, workload, assumptions)
    if args.json:
        out = {
            "plan": chosen.to_dict(),
            "suggestions": [_brief(pl) for pl in best],
            "min_gpus_that_fit": fewest,
        }
        print(json.dumps(out, indent=2))
    else:
        _print(chosen, best, fewest, args.gpus)
    return 0


def _brief(pl: Plan) -> dict:
    return {
        "layout": {"fsdp": pl.layout.fsdp, "ep": pl.layout.ep, "tp": pl.layout.tp, "cp": pl.layout.cp},
        "activation_checkpointing": pl.workload.activation_checkpointing,
        "memory_bytes": pl.memory.total,
        "rollout_bytes": None if pl.rollout is None else pl.rollout.total,
        "step_s": pl.time.total,
        "tokens_per_s_per_gpu": pl.time.tokens_per_s_per_gpu,
    }


def _print(chosen: Plan, best: list[Plan], fewest: int | None, gpus: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    lay, w, g = chosen.layout, chosen.workload, chosen.gpu
    ac = "with" if w.activation_checkpointing else "without"
    console.print(
        f"[bold]{chosen.config_name}[/] on {lay.gpus} x {g.name} ({format_bytes(g.memory_bytes)}, "
        f"{g.bf16_flops / 1e12:.0f} TFLOP/s bf16): {lay.describe()}; {w.micro_batch} x "
        f"{w.seq_len} tokens per rank, {w.grad_accum} micro-batch(es), {ac} activation checkpointing"
    )
    mem = Table(title="Memory per GPU (training)")
    mem.add_column("what")
    mem.add_column("bytes", justify="right")
    m = chosen.memory
    for label, v in (
        ("weights (fp32 master, sharded)", m.weights),
        ("gradients (fp32, sharded)", m.gradients),
        ("optimizer (AdamW moments, fp32)", m.optimizer),
        ("FSDP unsharded unit (2 x bf16 params + grads)", m.unsharded),
        ("activations", m.activations),
        ("logits + grad (fp32 LM head)", m.logits),
    ):
        mem.add_row(label, format_bytes(v))
    mem.add_section()
    verdict = "[green]fits[/]" if m.total <= chosen.capacity else "[red]does not fit[/]"
    mem.add_row(
        f"[bold]total[/] (usable {format_bytes(chosen.capacity)})", f"{format_bytes(m.total)} {verdict}"
    )
    if chosen.rollout is not None:
        r = chosen.rollout
        mem.add_section()
        mem.add_row(
            f"rollout: bf16 weights over tp x ep ({w.rollout_seqs} seqs x {w.rollout_len})",
            format_bytes(r.weights),
        )
        mem.add_row("rollout: lightning state (fp32)", format_bytes(r.lightning_state))
        mem.add_row("rollout: softmax KV (bf16)", format_bytes(r.softmax_kv))
        verdict = "[green]fits[/]" if r.total <= chosen.capacity else "[red]does not fit[/]"
        mem.add_row("[bold]rollout total[/]", f"{format_bytes(r.total)} {verdict}")
    console.print(mem)

    t = chosen.time
    tt = Table(
        title=f"Step time estimate (MFU {chosen.assumptions.mfu:.0%}, links at "
        f"{chosen.assumptions.link_efficiency:.0%})"
    )
    tt.add_column("what")
    tt.add_column("seconds", justify="right")
    tt.add_column("bytes sent per GPU per micro-batch", justify="right")
    cb = t.comm_bytes
    tt.add_row(f"compute ({format_count(t.flops_per_token)} FLOPs/token)", f"{t.compute:.3f}", "")
    tt.add_row(
        "FSDP all-gather + reduce-scatter (overlapped)",
        f"{t.fsdp_comm:.3f}",
        format_bytes(cb["fsdp_dense"] + cb["fsdp_experts"] + cb["hsdp_allreduce"]),
    )
    tt.add_row("EP all-to-all", f"{t.ep_comm:.3f}", format_bytes(cb["ep_all_to_all"]))
    tt.add_row("TP (sequence parallel)", f"{t.tp_comm:.3f}", format_bytes(cb["tp"]))
    tt.add_row("CP (ring K/V, lightning state)", f"{t.cp_comm:.3f}", format_bytes(cb["cp"]))
    tt.add_row("optimizer step", f"{t.optimizer:.3f}", "")
    tt.add_section()
    tt.add_row(
        "[bold]step[/]",
        f"{t.total:.3f}",
        f"{format_count(t.tokens_per_step)} tokens, {t.tokens_per_s_per_gpu:,.0f} tokens/s/GPU",
    )
    console.print(tt)

    if best:
        st = Table(title=f"Fastest layouts that fit on {gpus} x {g.name}")
        for col in ("fsdp", "ep", "tp", "cp", "AC", "memory", "step s", "tokens/s/GPU"):
            st.add_column(col, justify="right")
        for pl in best:
            lay = pl.layout
            st.add_row(
                str(lay.fsdp),
                str(lay.ep),
                str(lay.tp),
                str(lay.cp),
                "yes" if pl.workload.activation_checkpointing else "no",
                format_bytes(pl.memory.total),
                f"{pl.time.total:.3f}",
                f"{pl.time.tokens_per_s_per_gpu:,.0f}",
            )
        console.print(st)
    else:
        more = f"; the fewest {g.name}s on which one fits: {fewest}" if fewest else ""
        console.print(f"[red]No layout fits on {gpus} x {g.name}{more}.[/]")
