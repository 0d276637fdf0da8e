"""Lightning attention speed: openm1's Triton kernels beside flash-linear-attention and PyTorch SDPA.

One process, the same inputs, side by side (bf16, head dim 128). For each shape: forward ms,
forward+backward ms (random output gradient), the ratio to FLA, and the fraction of the roofline floor,
with the floor from the bf16 matrix rate and the copy bandwidth measured in this same run. Writes JSON
(device, date, versions) to ``bench/results/``.

FLA's ``chunk_lightning_attn`` computes its own decay from ``layer_idx`` with a formula other than the
release's, so the comparison runs FLA's ``chunk_simple_gla`` with ``g_gamma = -slope`` and ``scale=1``:
the same kernels, on exactly the function openm1 computes (SPEC.md, section 1). ``chunk_lightning_attn``
is timed too, for reference.

    python bench/lightning.py                 # everything, JSON to bench/results/
    python bench/lightning.py --quick         # two shapes, for a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openm1.ops.lightning import lightning_decay_slopes  # noqa: E402
from openm1.ops.lightning.triton import lightning_attn_step_triton, lightning_attn_triton  # noqa: E402

CHUNK = 64  # the floor's chunk length (ANCHORS.md)


def bench_ms(fn, warmup: int = 25, rep: int = 100) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def ceilings() -> dict:
    """The bf16 matrix rate and the device-to-device copy bandwidth of this GPU, measured now."""
    n = 8192
    a, b = (
        torch.randn(n, n, device="cuda", dtype=torch.bfloat16),
        torch.randn(n, n, device="cuda", dtype=torch.bfloat16),
    )
    mm = bench_ms(lambda: a @ b)
    src = torch.randn(2**28, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    cp = bench_ms(lambda: dst.copy_(src))
    return {"bf16_tflops": 2 * n**3 / mm / 1e9, "copy_tb_s": 2 * src.numel() * 4 / cp / 1e9}


def floor_ms(tokens: int, heads: int, dim: int, ceil: dict, backward: bool) -> float:
    """max(FLOPs / matrix rate, bytes / bandwidth); forward+backward counts 3x the FLOPs (dq, dk, dv)
    and 2x the bytes (q, k, v, dO read; o or dq, dk, dv written)."""
    flops = tokens * heads * (4 * CHUNK * dim + 4 * dim * dim) * (3 if backward else 1)
    nbytes = 4 * tokens * heads * dim * 2 * (2 if backward else 1)
    return max(flops / (ceil["bf16_tflops"] * 1e9), nbytes / (ceil["copy_tb_s"] * 1e9))


def graphed(fn):
    """``fn`` captured in a CUDA graph, returned as its replay: kernel time without the host's launch
    cost, which dominates one-token steps and which generation removes the same way."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def make(batch: int, length: int, heads: int, dim: int, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda: (torch.randn(batch, length, heads, dim, device="cuda", generator=g) * 0.5).to(torch.bfloat16)  # noqa: E731
    q, k, v = mk(), mk(), mk()
    slopes = lightning_decay_slopes(heads, 5, 80).cuda()
    return q, k, v, slopes


def fwd_bwd(fn, q, k, v):
    q, k, v = (x.detach().requires_grad_(True) for x in (q, k, v))
    do = torch.randn_like(q)

    def run():
        o = fn(q, k, v)
        torch.autograd.backward(o, do)
        q.grad = k.grad = v.grad = None

    return run


def implementations(slopes, heads):
    impls = {"openm1": lambda q, k, v: lightning_attn_triton(q, k, v, slopes)[0]}
    try:
        from fla.ops.lightning_attn import chunk_lightning_attn
        from fla.ops.simple_gla import chunk_simple_gla

        gamma = -slopes.float()
        impls["fla_simple_gla"] = lambda q, k, v: chunk_simple_gla(q, k, v, g_gamma=gamma, scale=1.0)[0]
        impls["fla_lightning"] = lambda q, k, v: chunk_lightning_attn(
            q, k, v, layer_idx=5, num_layers=80, scale=1.0
        )[0]
    except ImportError as e:
        print(f"flash-linear-attention not importable ({e}); timing openm1 and SDPA only", file=sys.stderr)
    impls["sdpa_flash"] = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
    ).transpose(1, 2)
    return impls


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def run_shape(batch, length, heads, dim, ceil, skip_sdpa_bwd=False) -> dict:
    q, k, v, slopes = make(batch, length, heads, dim)
    impls = implementations(slopes, heads)
    row = {"batch": batch, "length": length, "heads": heads, "dim": dim}
    if "fla_simple_gla" in impls:
        row["max_rel_diff_vs_fla"] = rel(impls["openm1"](q, k, v), impls["fla_simple_gla"](q, k, v))
    for name, fn in impls.items():
        if name == "sdpa_flash" and length > 65536:
            continue
        row[f"{name}_fwd_ms"] = bench_ms(lambda fn=fn: fn(q, k, v))
        if not (name == "sdpa_flash" and skip_sdpa_bwd):
            row[f"{name}_fwdbwd_ms"] = bench_ms(fwd_bwd(fn, q, k, v), warmup=10, rep=50)
    tokens = batch * length
    row["floor_fwd_ms"] = floor_ms(tokens, heads, dim, ceil, backward=False)
    row["floor_fwdbwd_ms"] = floor_ms(tokens, heads, dim, ceil, backward=True)
    for mode in ("fwd", "fwdbwd"):
        mine = row[f"openm1_{mode}_ms"]
        row[f"openm1_{mode}_floor_fraction"] = row[f"floor_{mode}_ms"] / mine
        if f"fla_simple_gla_{mode}_ms" in row:
            row[f"speedup_{mode}_vs_fla"] = row[f"fla_simple_gla_{mode}_ms"] / mine
    return row


def run_million(ceil) -> dict:
    """One sequence of 1,048,576 tokens, 16 heads: forward and backward must run; peak memory."""
    length, heads, dim = 1 << 20, 16, 128
    q, k, v, slopes = make(1, length, heads, dim)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    run = fwd_bwd(lambda q, k, v: lightning_attn_triton(q, k, v, slopes)[0], q, k, v)
    ms = bench_ms(run, warmup=2, rep=10)
    row = {
        "batch": 1,
        "length": length,
        "heads": heads,
        "dim": dim,
        "openm1_fwdbwd_ms": ms,
        "openm1_fwd_ms": bench_ms(lambda: lightning_attn_triton(q, k, v, slopes)[0], warmup=2, rep=10),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    try:
        from fla.ops.simple_gla import chunk_simple_gla

        gamma = -slopes.float()
        row["fla_simple_gla_fwd_ms"] = bench_ms(
            lambda: chunk_simple_gla(q, k, v, g_gamma=gamma, scale=1.0)[0], 2, 10
        )
        row["fla_simple_gla_fwdbwd_ms"] = bench_ms(
            fwd_bwd(lambda q, k, v: chunk_simple_gla(q, k, v, g_gamma=gamma, scale=1.0)[0], q, k, v), 2, 10
        )
        row["speedup_fwd_vs_fla"] = row["fla_simple_gla_fwd_ms"] / row["openm1_fwd_ms"]
        row["speedup_fwdbwd_vs_fla"] = row["fla_simple_gla_fwdbwd_ms"] / row["openm1_fwdbwd_ms"]
    except Exception as e:  # noqa: BLE001 - FLA absent or out of memory: openm1's figure still stands
        row["fla_error"] = repr(e)[:200]
    row["floor_fwd_ms"] = floor_ms(length, heads, dim, ceil, backward=False)
    row["floor_fwdbwd_ms"] = floor_ms(length, heads, dim, ceil, backward=True)
    return row


def run_decode(batch, ceil) -> dict:
    heads, dim = 64, 128
    q, k, v, slopes = make(batch, 1, heads, dim)
    state = torch.randn(batch, heads, dim, dim, device="cuda")
    row = {"batch": batch, "heads": heads, "dim": dim}
    step = lambda: lightning_attn_step_triton(q, k, v, slopes, state)  # noqa: E731
    row["openm1_ms"] = bench_ms(step)
    row["openm1_graph_ms"] = bench_ms(graphed(step))
    try:
        from fla.ops.lightning_attn import fused_recurrent_lightning_attn
        from fla.ops.simple_gla import fused_recurrent_simple_gla

        gamma = -slopes.float()
        row["fla_simple_gla_ms"] = bench_ms(
            lambda: fused_recurrent_simple_gla(
                q, k, v, g_gamma=gamma, scale=1.0, initial_state=state, output_final_state=True
            )
        )
        row["fla_lightning_ms"] = bench_ms(
            lambda: fused_recurrent_lightning_attn(
                q, k, v, layer_idx=5, num_layers=80, scale=1.0, initial_state=state, output_final_state=True
            )
        )
        row["speedup_vs_fla"] = row["fla_lightning_ms"] / row["openm1_ms"]
        fla_step = lambda: fused_recurrent_lightning_attn(  # noqa: E731
            q, k, v, layer_idx=5, num_layers=80, scale=1.0, initial_state=state, output_final_state=True
        )
        try:
            row["fla_lightning_graph_ms"] = bench_ms(graphed(fla_step))
            row["speedup_graph_vs_fla"] = row["fla_lightning_graph_ms"] / row["openm1_graph_ms"]
        except Exception as e:  # noqa: BLE001 - FLA may not be capturable
            row["fla_graph_error"] = f"{type(e).__name__}: {str(e)[:100]}"
    except ImportError:
        pass
    state_bytes = 2 * state.numel() * 4  # read and written
    row["floor_ms"] = state_bytes / (ceil["copy_tb_s"] * 1e9)
    row["openm1_floor_fraction"] = row["floor_ms"] / row["openm1_graph_ms"]
    return row


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "fla"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            out[name] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two shapes only")
    parser.add_argument("--shapes", default=None, help="'batch,length,heads' separated by ';'")
    parser.add_argument("--no-million", action="store_true", help="skip the 1M-token sequence")
    parser.add_argument("--decode-only", action="store_true", help="the decode step alone")
    parser.add_argument(
        "--out", default=None, help="JSON path (default bench/results/lightning-<date>-<gpu>.json)"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/lightning.py needs a CUDA GPU")
    ceil = ceilings()
    print(f"ceilings: {ceil['bf16_tflops']:.0f} TFLOP/s bf16, {ceil['copy_tb_s']:.2f} TB/s copy", flush=True)
    shapes = [(16, 4096, 16), (4, 16384, 16), (1, 65536, 16), (1, 262144, 16), (1, 32768, 64)]
    if args.quick:
        shapes = [(1, 65536, 16), (1, 32768, 64)]
    if args.shapes:
        shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
    words = torch.cuda.get_device_name().split()  # "NVIDIA H100 80GB HBM3" -> "h100"
    gpu = next((w.lower() for w in words if w[:1] in "ABHL" and w[1:].isdigit()), words[-1].lower())
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M")
    out = Path(args.out or f"bench/results/lightning-{stamp}-{gpu}.json")
    result = {
        "benchmark": "lightning",
        "device": torch.cuda.get_device_name(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "config_override": os.environ.get("OPENM1_LA_CONFIG"),
        "ceilings": ceil,
        "shapes": [],
        "million_tokens": None,
        "decode": [],
        "complete": False,
    }

    def save() -> None:
        """Written after every measurement (atomically), so a run cut short keeps what it measured."""
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(out)

    rows = result["shapes"]
    for batch, length, heads in [] if args.decode_only else shapes:
        rows.append(run_shape(batch, length, heads, 128, ceil, skip_sdpa_bwd=length > 65536))
        save()
        r = rows[-1]
        g = lambda key, r=r: r.get(key, float("nan"))  # noqa: E731 - FLA may be absent
        print(
            f"{batch}x{length} h{heads}: fwd {g('openm1_fwd_ms'):.3f} ms "
            f"(FLA {g('fla_simple_gla_fwd_ms'):.3f}, x{g('speedup_fwd_vs_fla'):.2f}), "
            f"fwd+bwd {g('openm1_fwdbwd_ms'):.3f} ms (FLA {g('fla_simple_gla_fwdbwd_ms'):.3f}, "
            f"x{g('speedup_fwdbwd_vs_fla'):.2f}), "
            f"floor {g('openm1_fwd_floor_fraction'):.0%} / {g('openm1_fwdbwd_floor_fraction'):.0%}",
            flush=True,
        )
    for b in (1, 64, 256):
        r = run_decode(b, ceil)
        result["decode"].append(r)
        save()
        print(
            f"decode b{r['batch']}: eager {r['openm1_ms'] * 1e3:.1f} us "
            f"(FLA {r.get('fla_lightning_ms', float('nan')) * 1e3:.1f} us, "
            f"x{r.get('speedup_vs_fla', float('nan')):.2f}); graph {r['openm1_graph_ms'] * 1e3:.1f} us "
            f"(FLA {r.get('fla_lightning_graph_ms', float('nan')) * 1e3:.1f} us, "
            f"x{r.get('speedup_graph_vs_fla', float('nan')):.2f}), floor {r['openm1_floor_fraction']:.0%}",
            flush=True,
        )
    if not (args.quick or args.no_million or args.decode_only):
        result["million_tokens"] = run_million(ceil)
        print(f"1M tokens: {result['million_tokens']}", flush=True)
    result["complete"] = True
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
