"""Generation benchmark: openm1's engine against transformers' ``MiniMaxForCausalLM.generate``.

Same process, same weights, same inputs. Decode tokens/s at several batch sizes (greedy, a fixed number
of new tokens after a fixed prompt) and prefill milliseconds at several prompt lengths, on the anchor
configuration of ANCHORS.md (8 layers 7 lightning : 1 softmax, hidden 1024, 16 heads of 64, 4 KV heads,
8 experts top-2, expert width 1408, vocab 32,000) in bf16. Then peak memory against prompt length (up to
1M tokens, chunked prefill, on the ``small`` preset; transformers while it runs), and how well the
engine's token probabilities agree with a training-style full forward in bf16, with and without the
FP32 LM head. Writes JSON to ``bench/results/`` and a PNG plot beside it.

    python bench/generate.py --cuda-graph    # on a GPU: the full run
    python bench/generate.py --small         # a CPU smoke run in about a minute
    python bench/generate.py --plot RESULT.json   # (re)draw the plot of a result
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from openm1.config import ModelConfig, hybrid_layer_types, preset
from openm1.generate import Engine, SamplingParams
from openm1.generate.prefill_graphs import PREFILL_GRAPH_MAX
from openm1.model import MiniMaxM1ForCausalLM

RESULTS = Path(__file__).resolve().parent / "results"


def anchor_config(small: bool) -> ModelConfig:
    if small:
        return ModelConfig(
            vocab_size=512, hidden_size=64, num_hidden_layers=8, layer_types=hybrid_layer_types(8),
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, rotary_dim=16, block_size=64,
            num_local_experts=4, num_experts_per_tok=2, intermediate_size=96, rope_theta=1e6,
        )  # fmt: skip
    return ModelConfig(
        vocab_size=32_000, hidden_size=1024, num_hidden_layers=8, layer_types=hybrid_layer_types(8),
        num_attention_heads=16, num_key_value_heads=4, head_dim=64, rotary_dim=64, block_size=256,
        num_local_experts=8, num_experts_per_tok=2, intermediate_size=1408, rope_theta=1e6,
        max_position_embeddings=1_048_576,
    )  # fmt: skip


def hf_model(config: ModelConfig, ours: MiniMaxM1ForCausalLM, device: torch.device, dtype: torch.dtype):
    """transformers' model with openm1's weights (parameter names are the same in memory)."""
    import transformers

    hf_config = transformers.MiniMaxConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, layer_types=list(config.layer_types),
        num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim, block_size=config.block_size,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        num_local_experts=config.num_local_experts, num_experts_per_tok=config.num_experts_per_tok,
        rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=False,
        linear_attn_alpha_factor=config.linear_attn_alpha_factor,
        linear_attn_beta_factor=config.linear_attn_beta_factor,
        full_attn_alpha_factor=config.full_attn_alpha_factor,
        full_attn_beta_factor=config.full_attn_beta_factor,
        mlp_alpha_factor=config.mlp_alpha_factor, mlp_beta_factor=config.mlp_beta_factor,
        max_position_embeddings=config.max_position_embeddings, attn_implementation="sdpa",
    )  # fmt: skip
    theirs = transformers.MiniMaxForCausalLM(hf_config)
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected, unexpected
    return theirs.to(device=device, dtype=dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int) -> float:  # noqa: ANN001
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@torch.no_grad()
def bench_decode(
    ours, theirs, config, device, batch, prompt_len, new_tokens, compile_decode, cuda_graph, experts
):  # noqa: ANN001, E501
    g = torch.Generator().manual_seed(batch)
    prompts = torch.randint(0, config.vocab_size, (batch, prompt_len), generator=g)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, ignore_eos=True, repetition_window=None)
    engine = Engine(
        ours,
        max_batch=batch,
        max_len=prompt_len + new_tokens + 1,
        compile=compile_decode,
        cuda_graph=cuda_graph,
        experts=experts,
    )
    engine.generate([p.tolist() for p in prompts[: min(batch, 2)]], SamplingParams(
        max_new_tokens=8, temperature=0, ignore_eos=True, repetition_window=None))  # fmt: skip  # warm-up
    engine.stats.update(decode_tokens=0, decode_s=0.0)
    sync(device)
    results = engine.generate([p.tolist() for p in prompts], params)
    sync(device)
    ours_rate = engine.stats["decode_tokens"] / engine.stats["decode_s"]
    row = {"batch": batch, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
           "openm1_tokens_per_s": ours_rate, "experts": engine.experts_graph or engine.experts_prefill,
           "cuda_graph": engine._graph is not None, "graph_ms": engine.graph_ms}  # fmt: skip
    if theirs is not None:
        ids = prompts.to(device)
        kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None)

        def gen(n):  # noqa: ANN001, ANN202
            return theirs.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)

        t_one = timed(lambda: gen(1), device, 1)
        sync(device)
        t = time.perf_counter()
        out = gen(new_tokens)
        sync(device)
        t_all = time.perf_counter() - t
        theirs_rate = batch * (new_tokens - 1) / max(t_all - t_one, 1e-9)
        agree = sum(
            a == b for r, row_ids in zip(results, out[:, prompt_len:].tolist(), strict=True)
            for a, b in zip(r.token_ids, row_ids, strict=False)
        ) / (batch * new_tokens)  # fmt: skip
        row.update(transformers_tokens_per_s=theirs_rate, ratio=ours_rate / theirs_rate,
                   greedy_token_agreement=agree)  # fmt: skip
    return row


@torch.no_grad()
def bench_prefill(ours, theirs, config, device, length, chunk, repeats, experts, cuda_graph, graph_max):  # noqa: ANN001
    """One prompt's prefill (and its first token). With ``cuda_graph`` the engine replays the prompt's
    prefill graph where its length allows one; the eager engine is timed too, in the same run."""
    g = torch.Generator().manual_seed(length)
    prompt = torch.randint(0, config.vocab_size, (1, length), generator=g)
    params = SamplingParams(max_new_tokens=1, temperature=0, ignore_eos=True, repetition_window=None)

    def engine_ms(graphs: bool) -> tuple[float, Engine]:
        engine = Engine(ours, max_batch=1, max_len=length + 2, prefill_chunk=chunk, experts=experts,
                        prefill_graph_max=graph_max if graphs else 0)  # fmt: skip
        return timed(lambda: engine.generate([prompt[0].tolist()], params), device, repeats) * 1e3, engine

    eager_ms, engine = engine_ms(False)
    row = {"tokens": length, "openm1_eager_ms": eager_ms}
    if cuda_graph and device.type == "cuda":
        graphed_ms, graphed = engine_ms(True)
        if graphed._prefill_graphs is not None and graphed._prefill_graphs.graphs:
            row["openm1_graph_ms"], engine = graphed_ms, graphed
            row["graph_bucket"] = next(iter(graphed._prefill_graphs.graphs))
    row["openm1_ms"] = row.get("openm1_graph_ms", eager_ms)

    def run_ours():  # noqa: ANN202
        engine.generate([prompt[0].tolist()], params)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        run_ours()
        row["openm1_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if theirs is not None:
        ids = prompt.to(device)
        try:
            row["transformers_ms"] = (
                timed(lambda: theirs(ids, use_cache=True, logits_to_keep=1), device, repeats) * 1e3
            )
            row["ratio"] = row["transformers_ms"] / row["openm1_ms"]
        except torch.OutOfMemoryError:
            row["transformers_ms"] = None
            row["transformers_error"] = "out of memory"
            torch.cuda.empty_cache()
    return row


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


@torch.no_grad()
def bench_memory(config, device, dtype, lengths, chunk, hf_max_s, with_transformers):  # noqa: ANN001
    """Peak device memory and wall time of prefilling one prompt of each length (openm1: chunked)."""
    torch.manual_seed(0)
    ours = MiniMaxM1ForCausalLM(config)
    theirs = hf_model(config, ours, device, dtype) if with_transformers else None
    ours = ours.to(device=device, dtype=dtype).eval()
    weights = sum(p.numel() * p.element_size() for p in ours.parameters()) / 2**30
    params = SamplingParams(max_new_tokens=1, temperature=0, ignore_eos=True, repetition_window=None)
    rows, hf_gave_up = [], None
    for n in lengths:
        g = torch.Generator().manual_seed(n)
        prompt = torch.randint(0, config.vocab_size, (1, n), generator=g)
        row: dict = {"tokens": n}
        try:
            _reset_peak(device)
            engine = Engine(ours, max_batch=1, max_len=n + 2, prefill_chunk=min(chunk, n))
            sync(device)
            t = time.perf_counter()
            engine.generate([prompt[0].tolist()], params)
            sync(device)
            row.update(openm1_s=time.perf_counter() - t, openm1_peak_gib=_peak_gib(device))
            del engine
        except torch.OutOfMemoryError:
            row["openm1_error"] = "out of memory"
        if theirs is not None:
            if hf_gave_up:
                row["transformers_error"] = hf_gave_up
            else:
                try:
                    _reset_peak(device)
                    ids = prompt.to(device)
                    sync(device)
                    t = time.perf_counter()
                    theirs(ids, use_cache=True, logits_to_keep=1)
                    sync(device)
                    row.update(
                        transformers_s=time.perf_counter() - t, transformers_peak_gib=_peak_gib(device)
                    )
                    if row["transformers_s"] > hf_max_s:
                        hf_gave_up = f"not run: the previous length took over {hf_max_s:g} s"
                except torch.OutOfMemoryError:
                    row["transformers_error"] = hf_gave_up = "out of memory"
                    torch.cuda.empty_cache()
        rows.append(row)
        log(f"memory {n}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in row.items() if k != "tokens"))  # fmt: skip
    return {"preset": "small", "prefill_chunk": chunk, "weights_gib": weights, "rows": rows}


@torch.no_grad()
def bench_agreement(config, device, dtype, prompts, prompt_len, new_tokens, head_std, cuda_graph):  # noqa: ANN001
    """Engine log-probs of sampled tokens against a training-style full forward of the same tokens.

    Random weights give near-uniform distributions, which agree trivially; the LM head is drawn with a
    larger spread (``head_std``: logits of a few units, as a trained model has) so the probabilities
    span the whole range. The same weights run with the LM head in float32 and in ``dtype``.
    """
    out = {"prompts": prompts, "prompt_tokens": prompt_len, "new_tokens": new_tokens, "lm_head_std": head_std}
    torch.manual_seed(0)
    base = MiniMaxM1ForCausalLM(config)
    with torch.no_grad():
        base.lm_head.weight.normal_(0.0, head_std)
    state = base.state_dict()
    g = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(0, config.vocab_size, (prompts, prompt_len), generator=g).tolist()
    for fp32_head in (True, False):
        model = MiniMaxM1ForCausalLM(dataclasses.replace(config, lm_head_fp32=fp32_head))
        model.load_state_dict(state)
        model = model.to(device=device, dtype=dtype).eval()
        engine = Engine(model, max_batch=prompts, max_len=prompt_len + new_tokens + 1, cuda_graph=cuda_graph)
        params = [SamplingParams(max_new_tokens=new_tokens, temperature=1.0, seed=i, ignore_eos=True,
                                 repetition_window=None) for i in range(prompts)]  # fmt: skip
        results = engine.generate(prompt_ids, params)
        ids = torch.tensor([p + r.token_ids for p, r in zip(prompt_ids, results, strict=True)], device=device)
        logits = model(ids).logits[:, prompt_len - 1 : -1].float()  # the trainer: one full forward
        trainer = torch.log_softmax(logits, -1).gather(-1, ids[:, prompt_len:, None]).squeeze(-1)
        engine_lp = torch.tensor([r.logprobs for r in results], device=device, dtype=torch.float64)
        a, b = engine_lp.double().exp().flatten(), trainer.double().exp().flatten()
        corr = torch.corrcoef(torch.stack((a, b)))[0, 1].item()
        key = "fp32_head" if fp32_head else f"{str(dtype).removeprefix('torch.')}_head"
        out[key] = {
            "tokens": a.numel(),
            "prob_correlation": corr,
            "prob_max_abs_diff": (a - b).abs().max().item(),
            "prob_mean_abs_diff": (a - b).abs().mean().item(),
            "logprob_max_abs_diff": (engine_lp.flatten() - trainer.double().flatten()).abs().max().item(),
            "mean_prob": a.mean().item(),
            "sample": {"engine": a[:2000].tolist(), "trainer": b[:2000].tolist()},
        }
        log(f"agreement ({key}): corr {corr:.6f}, max |dp| {out[key]['prob_max_abs_diff']:.3g}")
        del engine, model
    return out


def plot(result: dict, path: Path) -> None:
    """Four panels: decode tokens/s, prefill ms, peak memory against prompt length, probability agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0][0]
    dec = result.get("decode", [])
    if dec:
        b = [r["batch"] for r in dec]
        ax.plot(b, [r["openm1_tokens_per_s"] for r in dec], "o-", label="openm1")
        if all("transformers_tokens_per_s" in r for r in dec):
            ax.plot(b, [r["transformers_tokens_per_s"] for r in dec], "s--", label="transformers")
            for r in dec:
                ax.annotate(f"x{r['ratio']:.0f}", (r["batch"], r["openm1_tokens_per_s"]), textcoords="offset "
                            "points", xytext=(4, -12))  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="batch", ylabel="decode tokens/s", title="Greedy decode")
        ax.legend()
    ax = axes[0][1]
    pre = result.get("prefill", [])
    if pre:
        n = [r["tokens"] for r in pre]
        ax.plot(n, [r["openm1_ms"] for r in pre], "o-", label="openm1")
        if all(r.get("transformers_ms") for r in pre):
            ax.plot(n, [r["transformers_ms"] for r in pre], "s--", label="transformers")
        ax.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="ms", title="Prefill, batch 1")
        ax.legend()
    ax = axes[1][0]
    mem = result.get("memory")
    if mem:
        rows = mem["rows"]
        ours = [(r["tokens"], r["openm1_peak_gib"]) for r in rows if r.get("openm1_peak_gib")]
        theirs = [(r["tokens"], r["transformers_peak_gib"]) for r in rows if r.get("transformers_peak_gib")]
        if ours:
            ax.plot(*zip(*ours, strict=True), "o-", label=f"openm1 (chunks of {mem['prefill_chunk']})")
        if theirs:
            ax.plot(*zip(*theirs, strict=True), "s--", label="transformers")
        ax.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="peak GiB",
               title=f"Peak memory, prefill ({mem['preset']} preset)")  # fmt: skip
        ax.legend()
    ax = axes[1][1]
    agree = result.get("agreement")
    if agree:
        for key, marker in (("bfloat16_head", "x"), ("fp32_head", ".")):
            if key in agree:
                s = agree[key]["sample"]
                label = f"{key.replace('_', ' ')}: r = {agree[key]['prob_correlation']:.5f}"
                ax.scatter(s["trainer"], s["engine"], s=6, marker=marker, alpha=0.5, label=label)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="trainer probability (full forward)", ylabel="engine probability",
               title="Engine vs trainer, bf16")  # fmt: skip
        ax.legend()
    fig.suptitle(f"openm1 generation, {result.get('device')}, {result.get('date', '')[:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="a tiny model and short inputs: a CPU smoke run")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default=None, help="bf16 (GPU default) or fp32 (CPU default)")
    p.add_argument("--parts", default="decode,prefill,memory,agreement", help="which parts to run")
    p.add_argument("--batches", default=None, help="decode batch sizes, e.g. 1,16,64")
    p.add_argument("--prefill", default=None, help="prefill lengths, e.g. 2048,8192,32768")
    p.add_argument("--prompt-len", type=int, default=None, help="decode: prompt tokens (default 128)")
    p.add_argument("--new-tokens", type=int, default=None, help="decode: new tokens (default 256)")
    p.add_argument("--prefill-chunk", type=int, default=32_768)
    p.add_argument("--experts", default="auto", help="the engine's MoE form: auto, grouped, dense, reference")
    p.add_argument("--compile", action="store_true", help="torch.compile openm1's decode step")
    p.add_argument("--cuda-graph", action="store_true", help="replay openm1's decode step as a CUDA graph")
    p.add_argument(
        "--prefill-graph-max", type=int, default=PREFILL_GRAPH_MAX, help="prefill: longest graphed prompt"
    )
    p.add_argument("--no-transformers", action="store_true", help="openm1 only")
    p.add_argument("--memory", default=None, help="memory: prompt lengths (default 2K ... 1M on a GPU)")
    p.add_argument("--memory-chunk", type=int, default=32_768, help="memory: openm1's prefill chunk")
    p.add_argument(
        "--hf-max-s", type=float, default=30.0, help="memory: stop running transformers past this time"
    )
    p.add_argument("--agree-prompts", type=int, default=None, help="agreement: prompts (default 16)")
    p.add_argument("--head-std", type=float, default=0.1, help="agreement: LM-head init std")
    p.add_argument(
        "--out", default=None, help="JSON path (default bench/results/generate-<date>-<device>.json)"
    )
    p.add_argument("--plot", metavar="JSON", default=None, help="only draw the plot of a result file")
    args = p.parse_args(argv)
    if args.plot:
        path = Path(args.plot)
        plot(json.loads(path.read_text()), path.with_suffix(".png"))
        log(f"wrote {path.with_suffix('.png')}")
        return 0

    parts = set(args.parts.split(","))
    unknown = parts - {"decode", "prefill", "memory", "agreement"}
    if unknown:
        raise SystemExit(f"unknown --parts {sorted(unknown)}; choose from decode, prefill, memory, agreement")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, None: None}[args.dtype]
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    small = args.small
    batches = [int(x) for x in (args.batches or ("1,4" if small else "1,16,64")).split(",")]
    lengths = [int(x) for x in (args.prefill or ("128,512" if small else "2048,8192,32768")).split(",")]
    default_memory = "256,1024" if small else "2048,8192,32768,131072,524288,1048576"
    memory_lengths = [int(x) for x in (args.memory or default_memory).split(",")]
    prompt_len = args.prompt_len or (32 if small else 128)
    new_tokens = args.new_tokens or (16 if small else 256)
    repeats = 2 if small else 5

    import openm1

    versions = {"torch": torch.__version__, "openm1": openm1.__version__, "python": platform.python_version()}
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except ImportError:
        pass
    config = anchor_config(small)
    result = {
        "benchmark": "generate",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "small": small,
        "compile": args.compile,
        "cuda_graph": args.cuda_graph,
        "experts": args.experts,
        "prefill_graph_max": args.prefill_graph_max,
        "varlen_attention": os.environ.get("OPENM1_VARLEN_ATTENTION", "1") != "0",
        "versions": versions,
        "config": config.to_dict(),
    }
    out = Path(args.out) if args.out else RESULTS / (
        f"generate-{'small-' if small else ''}{dt.date.today().isoformat()}-{device.type}.json")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part, so a run cut short keeps what it measured
        out.write_text(json.dumps(result, indent=2) + "\n")

    if parts & {"decode", "prefill"}:
        torch.manual_seed(0)
        ours = MiniMaxM1ForCausalLM(config)
        theirs = None if args.no_transformers else hf_model(config, ours, device, dtype)
        ours = ours.to(device=device, dtype=dtype).eval()
        result["parameters"] = ours.num_parameters()
        log(f"{ours.num_parameters() / 1e6:.0f}M parameters, {device}, {dtype}")
        if "decode" in parts:
            result["decode"] = []
            for b in batches:
                row = bench_decode(ours, theirs, config, device, b, prompt_len, new_tokens, args.compile,
                                   args.cuda_graph, args.experts)  # fmt: skip
                result["decode"].append(row)
                log(f"decode batch {b}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()
                                                      if isinstance(v, float)))  # fmt: skip
                save()
        if "prefill" in parts:
            result["prefill"] = []
            for n in lengths:
                row = bench_prefill(ours, theirs, config, device, n, args.prefill_chunk, repeats,
                                    args.experts, args.cuda_graph, args.prefill_graph_max)  # fmt: skip
                result["prefill"].append(row)
                log(
                    f"prefill {n}: "
                    + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if isinstance(v, float))
                )
                save()
        del ours, theirs
    if "memory" in parts:
        mem_config = anchor_config(True) if small else preset("small")
        if not small:
            mem_config = dataclasses.replace(mem_config, max_position_embeddings=max(memory_lengths) + 2)
        result["memory"] = bench_memory(mem_config, device, dtype, memory_lengths, args.memory_chunk,
                                        args.hf_max_s, not args.no_transformers)  # fmt: skip
        save()
    if "agreement" in parts:
        n = args.agree_prompts or (4 if small else 16)
        result["agreement"] = bench_agreement(config, device, dtype, n, prompt_len, new_tokens,
                                              args.head_std, args.cuda_graph)  # fmt: skip
        save()
    log(f"wrote {out}")
    try:
        plot(result, out.with_suffix(".png"))
        log(f"wrote {out.with_suffix('.png')}")
    except ImportError:
        log("matplotlib is missing: no plot (pip install 'openm1[plot]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
