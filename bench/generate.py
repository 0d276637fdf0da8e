"""Generation benchmark: openm1's engine against transformers' ``MiniMaxForCausalLM.generate``.

Same process, same weights, same inputs. Decode tokens/s at several batch sizes (greedy, a fixed number
of new tokens after a fixed prompt) and prefill milliseconds at several prompt lengths, on the anchor
configuration of ANCHORS.md (8 layers 7 lightning : 1 softmax, hidden 1024, 16 heads of 64, 4 KV heads,
8 experts top-2, expert width 1408, vocab 32,000) in bf16. Writes JSON to ``bench/results/``.

    python bench/generate.py                 # on a GPU: the full run
    python bench/generate.py --small         # a CPU smoke run in about a minute
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from openm1.config import ModelConfig, hybrid_layer_types
from openm1.generate import Engine, SamplingParams
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
def bench_decode(ours, theirs, config, device, batch, prompt_len, new_tokens, compile_decode, cuda_graph):  # noqa: ANN001
    g = torch.Generator().manual_seed(batch)
    prompts = torch.randint(0, config.vocab_size, (batch, prompt_len), generator=g)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, ignore_eos=True, repetition_window=None)
    engine = Engine(
        ours,
        max_batch=batch,
        max_len=prompt_len + new_tokens + 1,
        compile=compile_decode,
        cuda_graph=cuda_graph,
    )
    engine.generate([p.tolist() for p in prompts[: min(batch, 2)]], SamplingParams(
        max_new_tokens=8, temperature=0, ignore_eos=True, repetition_window=None))  # fmt: skip  # warm-up
    engine.stats.update(decode_tokens=0, decode_s=0.0)
    sync(device)
    results = engine.generate([p.tolist() for p in prompts], params)
    sync(device)
    ours_rate = engine.stats["decode_tokens"] / engine.stats["decode_s"]
    row = {"batch": batch, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
           "openm1_tokens_per_s": ours_rate}  # fmt: skip
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
def bench_prefill(ours, theirs, config, device, length, chunk, repeats):  # noqa: ANN001
    g = torch.Generator().manual_seed(length)
    prompt = torch.randint(0, config.vocab_size, (1, length), generator=g)
    engine = Engine(ours, max_batch=1, max_len=length + 2, prefill_chunk=chunk)
    params = SamplingParams(max_new_tokens=1, temperature=0, ignore_eos=True, repetition_window=None)

    def run_ours():  # noqa: ANN202
        engine.generate([prompt[0].tolist()], params)

    row = {"tokens": length, "openm1_ms": timed(run_ours, device, repeats) * 1e3}
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="a tiny model and short inputs: a CPU smoke run")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default=None, help="bf16 (GPU default) or fp32 (CPU default)")
    p.add_argument("--batches", default=None, help="decode batch sizes, e.g. 1,16,64")
    p.add_argument("--prefill", default=None, help="prefill lengths, e.g. 2048,8192,32768")
    p.add_argument("--prompt-len", type=int, default=None, help="decode: prompt tokens (default 128)")
    p.add_argument("--new-tokens", type=int, default=None, help="decode: new tokens (default 256)")
    p.add_argument("--prefill-chunk", type=int, default=32_768)
    p.add_argument("--compile", action="store_true", help="torch.compile openm1's decode step")
    p.add_argument("--cuda-graph", action="store_true", help="replay openm1's decode step as a CUDA graph")
    p.add_argument("--no-transformers", action="store_true", help="openm1 only")
    p.add_argument(
        "--out", default=None, help="JSON path (default bench/results/generate-<date>-<device>.json)"
    )
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, None: None}[args.dtype]
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    small = args.small
    batches = [int(x) for x in (args.batches or ("1,4" if small else "1,16,64")).split(",")]
    lengths = [int(x) for x in (args.prefill or ("128,512" if small else "2048,8192,32768")).split(",")]
    prompt_len = args.prompt_len or (32 if small else 128)
    new_tokens = args.new_tokens or (16 if small else 256)
    repeats = 2 if small else 5

    config = anchor_config(small)
    torch.manual_seed(0)
    ours = MiniMaxM1ForCausalLM(config)
    theirs = None if args.no_transformers else hf_model(config, ours, device, dtype)
    ours = ours.to(device=device, dtype=dtype).eval()
    log(f"{ours.num_parameters() / 1e6:.0f}M parameters, {device}, {dtype}")

    decode, prefill = [], []
    for b in batches:
        row = bench_decode(
            ours, theirs, config, device, b, prompt_len, new_tokens, args.compile, args.cuda_graph
        )
        decode.append(row)
        log(f"decode batch {b}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if isinstance(v, float)))
    for n in lengths:
        row = bench_prefill(ours, theirs, config, device, n, args.prefill_chunk, repeats)
        prefill.append(row)
        log(f"prefill {n}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if isinstance(v, float)))

    import openm1

    versions = {"torch": torch.__version__, "openm1": openm1.__version__, "python": platform.python_version()}
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except ImportError:
        pass
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
        "versions": versions,
        "config": config.to_dict(),
        "parameters": ours.num_parameters(),
        "decode": decode,
        "prefill": prefill,
    }
    out = Path(args.out) if args.out else RESULTS / (
        f"generate-{'small-' if small else ''}{dt.date.today().isoformat()}-{device.type}.json")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
