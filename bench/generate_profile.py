"""Where generation time goes on a GPU: kernels per decode step, graph replay against the whole step,
and the host syncs and launches of a prefill (the anchor configuration of bench/generate.py, bf16).

    python bench/generate_profile.py --out profile.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import anchor_config  # noqa: E402

from openm1.generate import Engine, SamplingParams  # noqa: E402
from openm1.model import MiniMaxM1ForCausalLM  # noqa: E402

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def summarise(prof, top: int = 12) -> dict:  # noqa: ANN001
    """Kernel count and device time, host runtime calls that wait, and the costliest kernels."""
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    runtime = collections.Counter(e.name for e in prof.events() if e.name.startswith("cuda"))
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for e in kernels:
        by_name[e.name[:80]].append(e.device_time)
    worst = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:top]
    return {
        "kernels": len(kernels),
        "kernel_ms": sum(e.device_time for e in kernels) / 1e3,
        "syncing_runtime_calls": {k: v for k, v in runtime.items() if k.startswith(SYNC_CALLS)},
        "launches": sum(v for k, v in runtime.items() if "Launch" in k or k == "cudaGraphLaunch"),
        "top_kernels": [{"name": k, "count": len(v), "ms": sum(v) / 1e3} for k, v in worst],
    }


def host_top(prof, top: int = 25) -> list[dict]:  # noqa: ANN001
    """The operators that take the most host time themselves (where a launch-bound forward goes)."""
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
    return [{"name": e.key[:80], "count": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3} for e in rows]


def sync_sites(fn) -> dict[str, int]:  # noqa: ANN001
    """Where ``fn`` makes the host wait for the device: the innermost openm1 frame of each
    synchronizing call (``torch.cuda.set_sync_debug_mode``), with counts."""
    sites: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        stack = traceback.extract_stack()[:-1]
        frames = [f for f in stack if "openm1" in f.filename or "bench" in f.filename]
        where = frames[-1] if frames else traceback.extract_stack()[-2]
        sites[f"{Path(where.filename).name}:{where.lineno} {where.line} ({str(message)[:60]})"] += 1

    torch.cuda.synchronize()
    with warnings.catch_warnings():  # restores showwarning and the filters on exit
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return dict(sites.most_common())


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="generate-profile.json")
    p.add_argument("--experts", default="auto")
    p.add_argument("--prefill-only", action="store_true")
    p.add_argument("--prefill", default="2048,8192", help="prefill lengths")
    args = p.parse_args(argv)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    config = anchor_config(False)
    model = MiniMaxM1ForCausalLM(config).to(dev, torch.bfloat16).eval()
    report: dict = {"device": torch.cuda.get_device_name(dev), "experts": args.experts}
    greedy = SamplingParams(max_new_tokens=64, temperature=0, ignore_eos=True, repetition_window=None)

    for batch in () if args.prefill_only else (1, 16):
        engine = Engine(model, max_batch=batch, max_len=512, cuda_graph=True, experts=args.experts)
        prompts = torch.randint(0, config.vocab_size, (batch, 128)).tolist()
        engine.generate(prompts, greedy)
        graph = engine._graph
        row: dict = {"experts_graph": engine.experts_graph, "graph_ms_candidates": engine.graph_ms}
        if graph is not None:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(100):
                graph.graph.replay()
            end.record()
            torch.cuda.synchronize()
            row["graph_replay_ms"] = start.elapsed_time(end) / 100
            for r in range(engine.cache.num_rows):
                engine.cache.reset_row(r)
        engine.stats.update(decode_tokens=0, decode_s=0.0)
        torch.cuda.synchronize()
        t = time.perf_counter()
        engine.generate(prompts, greedy)
        torch.cuda.synchronize()
        row["wall_tokens_per_s"] = batch * 64 / (time.perf_counter() - t)
        row["decode_ms_per_step"] = (
            engine.stats["decode_s"] / max(engine.stats["decode_tokens"], 1) * batch * 1e3
        )
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            engine.generate(prompts, SamplingParams(max_new_tokens=9, temperature=0, ignore_eos=True,
                                                    repetition_window=None))  # fmt: skip
        row["profile_9_tokens"] = summarise(prof)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:  # eager step
            with engine._forms:
                model(torch.zeros(batch, 1, dtype=torch.long, device=dev), cache=engine._decode_view(batch))
        row["eager_step"] = summarise(prof, top=25)
        report[f"decode_b{batch}"] = row
        print(f"decode b{batch}: {json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)})}")

    one = SamplingParams(max_new_tokens=1, temperature=0, ignore_eos=True, repetition_window=None)
    for n in (int(x) for x in args.prefill.split(",")):
        engine = Engine(model, max_batch=1, max_len=n + 2, prefill_chunk=32768, experts=args.experts)
        prompt = torch.randint(0, config.vocab_size, (n,)).tolist()
        engine.generate([prompt], one)
        torch.cuda.synchronize()
        t = time.perf_counter()
        engine.generate([prompt], one)
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) * 1e3
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            engine.generate([prompt], one)
            torch.cuda.synchronize()
        row = {"wall_ms": wall, **summarise(prof, top=20), "host_top": host_top(prof)}
        ids = torch.tensor([prompt], device=dev)
        bare = []
        for _ in range(5):  # the model alone, no engine and no cache
            torch.cuda.synchronize()
            t = time.perf_counter()
            model(ids, logits_to_keep=1)
            torch.cuda.synchronize()
            bare.append((time.perf_counter() - t) * 1e3)
        row["bare_forward_ms"] = sorted(bare)[2]
        walls = []
        for _ in range(5):
            torch.cuda.synchronize()
            t = time.perf_counter()
            engine.generate([prompt], one)
            torch.cuda.synchronize()
            walls.append((time.perf_counter() - t) * 1e3)
        row["engine_ms_median"] = sorted(walls)[2]
        print(f"prefill {n}: engine {row['engine_ms_median']:.2f} ms, bare {row['bare_forward_ms']:.2f} ms")
        print(json.dumps(row["host_top"], indent=0))
        row["sync_sites"] = sync_sites(lambda p=prompt, e=engine: e.generate([p], one))
        print(f"prefill {n} sync sites: {json.dumps(row['sync_sites'], indent=1)}")
        report[f"prefill_{n}"] = row
        summary = f"kernels {row['kernels']}, kernel time {row['kernel_ms']:.2f} ms"
        print(f"prefill {n}: wall {wall:.2f} ms, {summary}, syncs {row['syncing_runtime_calls']}")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
