"""RL step benchmark: openm1's RLTrainer against TRL's GRPOTrainer with ``loss_type="cispo"``.

Same process, same initial weights (an openm1 model exported with ``save_pretrained`` and loaded by
transformers' ``MiniMaxForCausalLM``; the decay buffers it reports missing are recomputed from the
config), same byte-level tokenizer, same task (logic puzzles), same
number of prompts, group size, completion length, learning rate, one optimiser update per rollout
batch, CISPO with the same cap on the weight (openm1 ``eps_high=4.0`` = TRL ``epsilon_high=5.0``,
TRL's absolute cap). Times each step (rollout + reward + update) after ``--warmup`` steps and reports
the median, generated tokens per second, and the ratio. Writes JSON to ``bench/results/``.

    python bench/rl_step.py --cuda-graph            # on one GPU: the anchor model (ANCHORS.md), bf16
    python bench/rl_step.py --small --steps 2       # a CPU smoke run (tiny model) in a few minutes
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate import anchor_config, hf_model  # noqa: E402
from openm1.model import MiniMaxM1ForCausalLM  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SPECIALS = ("<pad>", "<s>", "</s>")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-printable-character map (what a byte-level BPE stores in its vocabulary)."""
    bs = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def byte_tokenizer_folder(folder: Path, vocab_size: int) -> Path:
    """A transformers tokenizer in which byte b is id b, then <pad> <s> </s> (as openm1's
    ByteTokenizer), and ids up to ``vocab_size`` decode to ``<id>``: TRL and openm1 share it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    enc = _bytes_to_unicode()
    vocab = {enc[b]: b for b in range(256)}
    for i, tok in enumerate(SPECIALS):
        vocab[tok] = 256 + i
    for i in range(256 + len(SPECIALS), vocab_size):
        vocab["".join(enc[b] for b in f"<{i}>".encode())] = i
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(str(folder))
    return folder


def puzzles(n: int, seed: int, families: list[str], difficulty: int):  # noqa: ANN201
    from openm1.rewards.logic import family

    rng = random.Random(seed)
    fams = [family(f) for f in families]
    return [fams[i % len(fams)].generate(rng.getrandbits(32), difficulty) for i in range(n)]


def run_openm1(model, tok, items, args) -> dict:  # noqa: ANN001
    from openm1.rewards.logic import LogicReward
    from openm1.rl import RLConfig, RLTrainer
    from openm1.rl.curriculum import Task

    reward = LogicReward()
    tasks = [Task(p.prompt, p, reward, "logic", "rule") for p in items]
    cfg = RLConfig(
        algo="cispo",
        eps_high=4.0,
        group_size=args.group_size,
        prompts_per_step=args.prompts,
        length_stages=[args.max_new_tokens],
        steps=args.warmup + args.steps,
        lr=args.lr,
        minibatches=1,
        chat=False,
        repetition_window=None,
        cuda_graph=args.cuda_graph,
        progress=False,
        plots=False,
        tensorboard=False,
        seed=0,
    )
    with tempfile.TemporaryDirectory() as out:
        history = RLTrainer(model, tok, tasks, cfg, out).train()
    timed = history[args.warmup :]
    step_s = [h["step_s"] for h in timed]
    gen_tokens = [h["response_length/mean"] * args.prompts * args.group_size for h in timed]
    return {
        "step_s": step_s,
        "median_step_s": statistics.median(step_s),
        "median_rollout_s": statistics.median(h["rollout_s"] for h in timed),
        "median_update_s": statistics.median(h["update_s"] for h in timed),
        "mean_completion_length": statistics.mean(h["response_length/mean"] for h in timed),
        "tokens_per_s": sum(gen_tokens) / sum(step_s),
        "grad_norms": [h.get("grad_norm") for h in history],
        "nan_skipped": sum(h.get("nan_skipped", 0) for h in history),
    }


def run_trl(model, tok_folder: Path, items, args) -> dict:  # noqa: ANN001
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from openm1.rewards.logic import LogicReward

    logic = LogicReward()

    def reward(prompts, completions, puzzle, **kwargs):  # noqa: ANN001, ANN003, ANN202
        return [logic(p, c, ref).score for p, c, ref in zip(prompts, completions, puzzle, strict=True)]

    steps = args.warmup + args.steps
    rows = [{"prompt": p.prompt, "puzzle": {"family": p.family, "data": p.data}} for p in items]
    data = Dataset.from_list(rows * (steps * args.prompts // len(rows) + 1))

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.times, self.lengths, self.grad_norms, self.t0 = [], [], [], 0.0

        def on_step_begin(self, a, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            _sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            _sync()
            self.times.append(time.perf_counter() - self.t0)

        def on_log(self, a, state, control, logs=None, **kw):  # noqa: ANN001, ANN003, ANN201
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])
            if logs and "grad_norm" in logs:
                self.grad_norms.append(float(logs["grad_norm"]))

    batch = args.prompts * args.group_size
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-rl-step-"),
        loss_type="cispo",
        epsilon_high=5.0,  # TRL's absolute cap on the weight = openm1's 1 + eps_high (4.0)
        num_generations=args.group_size,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        max_completion_length=args.max_new_tokens,
        learning_rate=args.lr,
        lr_scheduler_type="constant",  # openm1's schedule (no warmup configured)
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_epsilon=1e-15,
        max_grad_norm=1.0,
        beta=0.0,
        temperature=1.0,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=args.dtype == "bf16",
        use_cpu=not torch.cuda.is_available(),
        seed=0,
    )
    clock = Clock()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(str(tok_folder)),
        callbacks=[clock],
    )
    error = None
    try:
        trainer.train()
    except Exception as e:  # noqa: BLE001 - keep the steps that ran (ANCHORS.md saw TRL fail at step 4)
        error = f"{type(e).__name__}: {str(e)[:300]}"
        log(f"TRL stopped after {len(clock.times)} steps: {error}")
    step_s = clock.times[args.warmup :] or clock.times
    lengths = clock.lengths[args.warmup :] or clock.lengths
    mean_len = statistics.mean(lengths) if lengths else float("nan")
    if not step_s:
        return {"step_s": [], "error": error}
    return {
        "error": error,
        "grad_norms": clock.grad_norms,
        "step_s": step_s,
        "median_step_s": statistics.median(step_s),
        "mean_completion_length": mean_len,
        "tokens_per_s": mean_len * batch * len(step_s) / sum(step_s),
    }


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="the tiny CPU configuration (smoke run)")
    p.add_argument(
        "--dtype", choices=("bf16", "fp32"), default=None, help="default: bf16 on CUDA, fp32 on CPU"
    )
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--families", default="sorting,arithmetic,reversal")
    p.add_argument("--difficulty", type=int, default=2)
    p.add_argument("--cuda-graph", action="store_true", help="openm1: CUDA-graph decode in the rollouts")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument(
        "--out", default=None, help="JSON path (default bench/results/rl_step-<date>-<device>.json)"
    )
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    config = anchor_config(args.small)
    torch.manual_seed(0)
    with torch.device(device):
        ours = MiniMaxM1ForCausalLM(config)
    ours = ours.to(dtype)
    items = puzzles(256, 0, args.families.split(","), args.difficulty)

    from openm1.generate.tokenizer import HFTokenizer

    work = Path(tempfile.mkdtemp(prefix="rl-step-"))
    tok_folder = byte_tokenizer_folder(work / "tokenizer", config.vocab_size)
    tok = HFTokenizer(tok_folder)
    export = work / "model"
    ours.save_pretrained(export)  # the same weights, in transformers' layout, for TRL
    log(f"device {device}, {args.dtype}, {ours.num_parameters() / 1e6:.1f}M parameters; openm1 ...")

    date = dt.datetime.now(dt.timezone.utc)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {os.cpu_count()} cores ({platform.machine()}), torch threads {torch.get_num_threads()}"
    )
    import transformers
    import trl

    result: dict = {
        "benchmark": "rl_step",
        "date": date.isoformat(timespec="seconds"),
        "device": name,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "model": {"parameters": ours.num_parameters(), "config": config.to_dict()},
    }
    out = Path(
        args.out or RESULTS / f"rl_step-{date:%Y-%m-%d}-{'cuda' if device.type == 'cuda' else 'cpu'}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(result, indent=2) + "\n")

    result["openm1"] = run_openm1(ours, tok, items, args)
    log(f"openm1: {result['openm1']['median_step_s']:.3f} s/step")
    save()
    del ours
    if not args.skip_trl:
        # On CUDA transformers' default forms fail on this model (ANCHORS.md: the batched experts hit a
        # misaligned address in generate, SDPA rejects the padded mask), so TRL gets the eager ones.
        eager = {"attn_implementation": "eager", "experts_implementation": "eager"}
        impl = eager if device.type == "cuda" else {}
        try:
            theirs = transformers.AutoModelForCausalLM.from_pretrained(str(export), dtype=dtype, **impl)
            theirs = theirs.to(device)
        except Exception as e:  # noqa: BLE001 - fall back to copying the state dict in memory
            log(f"loading the export with transformers failed ({e}); copying the weights in memory")
            fresh = MiniMaxM1ForCausalLM.from_pretrained(export)
            theirs = hf_model(config, fresh, device, dtype)
        result["trl_settings"] = impl
        result["trl"] = run_trl(theirs, tok_folder, items, args)
        if result["trl"].get("step_s"):
            result["speedup_step"] = result["trl"]["median_step_s"] / result["openm1"]["median_step_s"]
            trl_s = result["trl"]["median_step_s"]
            log(f"TRL: {trl_s:.3f} s/step; openm1 is {result['speedup_step']:.2f}x faster")
        save()
    print(json.dumps({k: result[k] for k in ("device", "speedup_step") if k in result}))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
