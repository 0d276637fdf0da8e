"""Try launch configurations of the Triton lightning kernels on one shape (a tuning aid, not a result).

python bench/lightning_sweep.py --length 65536 --heads 16
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.lightning import bench_ms, fwd_bwd, make  # noqa: E402
from openm1.ops.lightning.triton import lightning_attn_triton  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--length", type=int, default=65536)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    args = p.parse_args()
    q, k, v, slopes = make(args.batch, args.length, args.heads, args.dim)
    fn = lambda q, k, v: lightning_attn_triton(q, k, v, slopes)[0]  # noqa: E731
    ref = fn(q, k, v)
    configs = [
        (64, 64, 4, 2),
        (64, 64, 4, 1),
        (64, 64, 8, 2),
        (64, 128, 8, 2),
        (64, 128, 8, 1),
        (64, 32, 4, 2),
        (128, 64, 8, 2),
        (128, 64, 8, 1),
        (32, 64, 4, 2),
        (128, 128, 8, 1),
    ]
    for c, bv, warps, stages in configs:
        os.environ["OPENM1_LA_CONFIG"] = f"{c},{bv},{warps},{stages}"
        try:
            out = fn(q, k, v)
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            f = bench_ms(lambda: fn(q, k, v), 10, 40)
            fb = bench_ms(fwd_bwd(fn, q, k, v), 5, 20)
            print(
                f"C={c:3d} BV={bv:3d} warps={warps} stages={stages}: fwd {f:.3f} ms  "
                f"fwd+bwd {fb:.3f} ms  diff {err:.1e}",
                flush=True,
            )
        except Exception as e:  # noqa: BLE001 - out of resources etc.
            print(
                f"C={c} BV={bv} warps={warps} stages={stages}: {type(e).__name__}: {str(e)[:80]}", flush=True
            )
    os.environ.pop("OPENM1_LA_CONFIG", None)


if __name__ == "__main__":
    main()
