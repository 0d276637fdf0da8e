"""Try launch settings of the Triton lightning kernels over the benchmark's shapes (a tuning aid, not
a result): the execution mode (segmented or single-pass), the segment count, the tile configuration,
and the decode step's tile. Prints one line per trial and writes them as JSON.

python bench/lightning_sweep.py --out sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.lightning import bench_ms, fwd_bwd, graphed, make  # noqa: E402
from openm1.ops.lightning.triton import lightning_attn_step_triton, lightning_attn_triton  # noqa: E402

SHAPES = [(16, 4096, 16), (4, 16384, 16), (1, 65536, 16), (1, 32768, 64)]
# (single-pass threshold, target programs, C, BV, warps, stages)
TRIALS = [
    ("0", "1024", "64,64,4,2"),
    ("0", "512", "64,64,4,2"),
    ("0", "1024", "64,64,4,3"),
    ("1", "1024", "64,64,4,3"),
    ("1", "1024", "64,64,4,4"),
    ("1", "1024", "64,128,8,3"),
    ("1", "1024", "64,64,8,3"),
    ("1", "1024", "32,64,4,3"),
]
DECODE = ["64,4", "64,8", "128,4", "128,8", "64,4,stream", "64,8,stream", "128,4,stream"]


def trial_env(single: str, programs: str, config: str) -> None:
    os.environ["OPENM1_LA_SINGLE_PASS_MIN"] = single
    os.environ["OPENM1_LA_PROGRAMS"] = programs
    os.environ["OPENM1_LA_CONFIG"] = config


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="sweep.json")
    p.add_argument("--no-backward", action="store_true")
    p.add_argument("--decode-only", action="store_true")
    p.add_argument("--trials", default=None, help="'single/programs/C,BV,warps,stages' separated by ';'")
    p.add_argument("--decode", default=None, help="decode configs 'BV,warps[,stream]' separated by ';'")
    p.add_argument("--decode-batches", default="1,8,16,64,256")
    p.add_argument("--shapes", default=None, help="'batch,length,heads' separated by ';'")
    args = p.parse_args()
    trials = [tuple(t.split("/")) for t in args.trials.split(";")] if args.trials else TRIALS
    decode = args.decode.split(";") if args.decode else DECODE
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")] if args.shapes else SHAPES
    rows = []
    for batch, length, heads in [] if args.decode_only else shapes:
        q, k, v, slopes = make(batch, length, heads, 128)
        fn = lambda q, k, v, s=slopes: lightning_attn_triton(q, k, v, s)[0]  # noqa: E731
        ref = None
        for single, programs, config in trials:
            trial_env(single, programs, config)
            row = {"shape": [batch, length, heads], "single": single, "programs": programs, "config": config}
            try:
                out = fn(q, k, v)
                ref = out if ref is None else ref
                row["diff"] = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
                row["fwd_ms"] = bench_ms(lambda fn=fn, q=q, k=k, v=v: fn(q, k, v), 10, 40)
                if not args.no_backward:
                    row["fwdbwd_ms"] = bench_ms(fwd_bwd(fn, q, k, v), 5, 20)
            except Exception as e:  # noqa: BLE001 - out of resources etc.
                row["error"] = f"{type(e).__name__}: {str(e)[:100]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
        del q, k, v
    for key in ("OPENM1_LA_SINGLE_PASS_MIN", "OPENM1_LA_PROGRAMS", "OPENM1_LA_CONFIG"):
        os.environ.pop(key, None)
    for batch in [int(b) for b in args.decode_batches.split(",")]:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(batch, 64, 128, device="cuda", generator=g).bfloat16() for _ in range(3))
        slopes = torch.rand(64, device="cuda")
        state = torch.randn(batch, 64, 128, 128, device="cuda")
        for config in decode:
            bv, warps, *flags = config.split(",")
            os.environ["OPENM1_LA_DECODE_CONFIG"] = f"{bv},{warps}"
            os.environ["OPENM1_LA_DECODE_STREAM"] = "1" if "stream" in flags else "0"
            row = {"decode_batch": batch, "config": config}
            try:
                step = lambda q=q, k=k, v=v, s=slopes, st=state: lightning_attn_step_triton(q, k, v, s, st)  # noqa: E731
                row["us"] = 1e3 * bench_ms(graphed(step), 25, 200)
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e)[:100]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
        try:  # the anchor, in the same process
            from fla.ops.lightning_attn import fused_recurrent_lightning_attn

            fla_step = lambda q=q, k=k, v=v, st=state: fused_recurrent_lightning_attn(  # noqa: E731
                q[:, None], k[:, None], v[:, None], layer_idx=5, num_layers=80, scale=1.0,
                initial_state=st, output_final_state=True,
            )  # fmt: skip
            us = 1e3 * bench_ms(graphed(fla_step), 25, 200)
            rows.append({"decode_batch": batch, "config": "fla", "us": us})
            print(json.dumps(rows[-1]), flush=True)
        except ImportError:
            pass
    os.environ.pop("OPENM1_LA_DECODE_CONFIG", None)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
