"""The stage runner: pretrain -> SFT -> CISPO RL on a fresh tiny hybrid model, a held-out evaluation
after each stage, and the report folder.

Layout of ``out/``: ``data/`` (the splits), ``pretrain/``, ``sft/``, ``rl/`` (each with its metrics,
TensorBoard events, checkpoints and ``final/`` model), ``state.json`` (the stages finished, with their
results), ``summary.json``, ``report.md``, ``samples.md``, ``plots/*.png``. With ``resume`` a stopped run
skips the finished stages (loading the last one's model) and the interrupted one continues from its
latest checkpoint.

Under ``torchrun -m openm1 run`` every stage trains a sharded copy of the model (see the trainers),
whose ``final/`` folder (written whole by rank 0) every rank then loads into its plain model; the
held-out evaluation runs on rank 0 (the others wait for it, up to ``OPENM1_DIST_TIMEOUT`` seconds) and
its result is sent to every rank; only rank 0 writes the data files, ``state.json`` and the report.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from openm1.config import atomic_write_text
from openm1.distributed.env import DistEnv, barrier, maybe_init_distributed
from openm1.eval import EvalSettings, evaluate
from openm1.generate import ByteTokenizer
from openm1.generate.loading import resolve_device
from openm1.model import MiniMaxM1ForCausalLM
from openm1.pipeline.config import PipelineConfig
from openm1.pipeline.data import StageData, stage_data, write_data_files
from openm1.pipeline.tasks import build_splits
from openm1.train import Trainer

STATE = "state.json"


def held_out_eval(model: torch.nn.Module, tok: Any, data: StageData, cfg: PipelineConfig) -> dict[str, Any]:
    """Sampled pass@1 (the accuracy the report leads with) and greedy accuracy on the held-out rows."""
    e, seed = cfg.eval, cfg.pipeline.seed
    sampled = evaluate(
        model,
        tok,
        data.eval_rows,
        EvalSettings(
            n=e.samples,
            k=(1,),
            temperature=e.temperature,
            top_p=e.top_p,
            max_new_tokens=e.max_new_tokens,
            seed=seed,
        ),
    )
    out: dict[str, Any] = {
        "accuracy": sampled.scores["pass@1"],
        "by_family": _by_family(sampled.rows, [r.reference["family"] for r in data.eval_rows]),
        "mean_length": sampled.scores["mean_length"],
        **answer_spread(sampled.rows, data.eval_rows),
        "eval_seconds": sampled.seconds,
        "samples": [
            {"prompt": r["prompt"], "answer": r["samples"][0]["text"], "correct": r["samples"][0]["correct"]}
            for r in sampled.rows[: e.show]
        ],
    }
    if e.greedy:
        greedy = evaluate(
            model, tok, data.eval_rows, EvalSettings(max_new_tokens=e.max_new_tokens, seed=seed)
        )
        out["greedy_accuracy"] = greedy.scores["pass@1"]
        out["eval_seconds"] += greedy.seconds
    return out


def answer_spread(rows: list[dict[str, Any]], eval_rows: list[Any]) -> dict[str, Any]:
    """How concentrated the sampled final answers are, and what the best *constant* answer would score.

    A tiny model can raise its accuracy by learning the answer prior (always the most frequent count)
    rather than the procedure; these two numbers make that visible: a ``top_answer_share`` near 1 with
    an accuracy near ``constant_answer_accuracy`` is a model that answers the same thing every time.
    """
    from collections import Counter

    from openm1.eval.bench import reward_for
    from openm1.rewards.logic import extract_answer

    answers = [extract_answer(s["text"]) for r in rows for s in r["samples"]]
    counts = Counter(a.strip() for a in answers if a and a.strip())
    if not counts:
        return {"top_answer": None, "top_answer_share": 0.0, "constant_answer_accuracy": 0.0}
    top, n = counts.most_common(1)[0]
    checks = {kind: reward_for(kind) for kind in {row.type for row in eval_rows}}
    best = 0.0
    for candidate, _ in counts.most_common(10):
        hits = sum(
            checks[row.type](row.prompt, f"Answer: {candidate}", row.reference).score >= 1.0
            for row in eval_rows
        )
        best = max(best, hits / max(1, len(eval_rows)))
    return {"top_answer": top, "top_answer_share": n / len(answers), "constant_answer_accuracy": best}


def _by_family(rows: list[dict[str, Any]], families: list[str]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for r, fam in zip(rows, families, strict=True):
        groups.setdefault(fam, []).append(r["pass@1"])
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


class PipelineRunner:
    """``PipelineRunner(config, out_dir).run(resume=False)`` -> the summary dict."""

    def __init__(self, config: PipelineConfig, out_dir: str | os.PathLike) -> None:
        self.config = config.validate()
        self.out = Path(out_dir)
        self.dist: DistEnv | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (rank 0 under torchrun, or alone)."""
        return self.dist is None or self.dist.is_main

    def _say(self, text: str) -> None:
        if self.is_main:
            print(text)

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        path = self.out / STATE
        return json.loads(path.read_text()) if path.is_file() else {"stages": {}}

    def _save_state(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.out / STATE, json.dumps(state, indent=1) + "\n")

    # ------------------------------------------------------------------ run
    def run(self, resume: bool = False) -> dict[str, Any]:
        cfg = self.config
        p = cfg.pipeline
        if p.threads:
            torch.set_num_threads(p.threads)
        self.dist = maybe_init_distributed()
        device = resolve_device(p.device) if self.dist is None else self.dist.device
        if resume and not (self.out / STATE).is_file():
            self._say(f"nothing to resume in {self.out}: starting a fresh run")
        if not resume and (self.out / STATE).is_file():
            raise ValueError(
                f"{self.out} already holds a run: pass --resume to continue it, or choose another --out"
            )
        barrier()  # every rank has looked before rank 0 writes anything
        self.out.mkdir(parents=True, exist_ok=True)
        state = self._state()
        t_total = time.perf_counter()

        model_cfg = cfg.model_config()
        tok = ByteTokenizer(model_cfg.vocab_size)
        t = cfg.task
        splits = build_splits(
            t.families,
            t.difficulty,
            n_eval=t.eval_size,
            n_rl=t.rl_size,
            n_sft=t.sft_size,
            n_pretrain=t.pretrain_size,
            seed=p.seed,
        )
        if self.is_main:
            write_data_files(splits, self.out / "data")
        data = stage_data(splits, tok)
        self._check_sizes(data)

        torch.manual_seed(p.seed)
        with torch.device(device):
            model = MiniMaxM1ForCausalLM(model_cfg)
        stages = state["stages"]
        last_done = None
        for stage in ("pretrain", "sft", "rl"):
            if stage in stages:
                last_done = stage
                continue
            if last_done is not None:
                _load_into(model, self.out / last_done / "final")
                last_done = None
            if not self._enabled(stage):
                continue
            self._say(f"== {stage}")
            t0 = time.perf_counter()
            result = self._run_stage(stage, model, tok, data, resume)
            result["time_s"] = time.perf_counter() - t0
            self._say(f"== {stage}: held-out evaluation")
            result |= self._held_out_eval(model, tok, data)
            self._say(
                f"== {stage}: accuracy {100 * result['accuracy']:.1f}% "
                f"(greedy {100 * result.get('greedy_accuracy', float('nan')):.1f}%), {result['time_s']:.0f}s"
            )
            stages[stage] = result
            if self.is_main:
                self._save_state(state)
        if last_done is not None:
            _load_into(model, self.out / last_done / "final")

        from openm1.pipeline.report import write_report

        summary = {
            "task": asdict(cfg.task),
            "model": {
                "preset": p.preset,
                "overrides": p.model,
                "parameters": model.num_parameters(),
                "active_parameters": model.num_parameters(active=True),
                "layers": model_cfg.layer_types,
            },
            "data": splits.sizes(),
            "device": str(device),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
            + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "stages": [
                {"stage": k, **{kk: vv for kk, vv in v.items() if kk != "samples"}} for k, v in stages.items()
            ],
            "wall_s": time.perf_counter() - t_total + state.get("previous_wall_s", 0.0),
        }
        if "sft" in stages and "rl" in stages:
            summary["rl_gain_points"] = 100 * (stages["rl"]["accuracy"] - stages["sft"]["accuracy"])
        state["previous_wall_s"] = summary["wall_s"]
        if self.is_main:
            self._save_state(state)
            write_report(self.out, summary, stages)
        barrier()
        return summary

    def _held_out_eval(self, model: torch.nn.Module, tok: Any, data: StageData) -> dict[str, Any]:
        """:func:`held_out_eval`; under torchrun on rank 0 (its plain model), sent to every rank."""
        if self.dist is None:
            return held_out_eval(model, tok, data, self.config)
        result = [held_out_eval(model, tok, data, self.config) if self.is_main else None]
        torch.distributed.broadcast_object_list(result, src=0)
        return result[0]

    def _enabled(self, stage: str) -> bool:
        cfg = getattr(self.config, stage)
        return cfg is not None and cfg.steps > 0

    def _check_sizes(self, data: StageData) -> None:
        for stage, examples in (("pretrain", data.pretrain), ("sft", data.sft)):
            cfg = getattr(self.config, stage)
            if cfg.steps == 0:
                continue
            total = sum(len(e.tokens) for e in examples)
            per_step = cfg.grad_accum * cfg.context_stages.max_len
            if per_step > total:
                raise ValueError(
                    f"[{stage}] one step wants {per_step} tokens (grad_accum x seq_len) but the whole "
                    f"{stage} data has {total}: lower seq_len or grad_accum, or raise [task] {stage}_size"
                )

    def _run_stage(
        self, stage: str, model: torch.nn.Module, tok: Any, data: StageData, resume: bool
    ) -> dict[str, Any]:
        folder = self.out / stage
        # under torchrun the trainer shards a copy; its final/ then comes back into the plain model
        trained = model if self.dist is None else copy.deepcopy(model)
        if stage in ("pretrain", "sft"):
            cfg = getattr(self.config, stage)
            cfg.seed = self.config.pipeline.seed
            examples = data.pretrain if stage == "pretrain" else data.sft
            trainer = Trainer(trained, examples, cfg, folder, name=stage)
            history = trainer.train(resume=resume)
            if self.dist is not None:
                _load_into(model, folder / "final")
            tokens = sum(h["tokens"] for h in history)
            train_s = trainer.elapsed_s
            return {
                "steps": cfg.steps,
                "final_loss": history[-1]["loss"] if history else None,
                "tokens": tokens,
                "tokens_per_s": tokens / train_s if train_s > 0 else 0.0,
            }
        from openm1.rl import RLTrainer

        rl_cfg = self.config.rl
        rl_cfg.seed = self.config.pipeline.seed
        trainer = RLTrainer(trained, tok, data.rl, rl_cfg, folder)
        t0 = time.perf_counter()
        history = trainer.train()
        seconds = time.perf_counter() - t0
        if self.dist is None:
            model.save_pretrained(folder / "final")
        else:
            from openm1.distributed.checkpoint import save_full_pretrained

            save_full_pretrained(trained, folder / "final")
            _load_into(model, folder / "final")
        tokens = sum(
            h.get("response_length/mean", 0.0) * rl_cfg.prompts_per_step * rl_cfg.group_size for h in history
        )
        return {
            "steps": rl_cfg.steps,
            "algo": rl_cfg.algo,
            "train_reward_first": history[0].get("reward/mean") if history else None,
            "train_reward_last": history[-1].get("reward/mean") if history else None,
            "generated_tokens": int(tokens),
            "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        }


def _load_into(model: torch.nn.Module, folder: Path) -> None:
    from openm1.model.checkpoint import from_pretrained

    loaded = from_pretrained(folder, device="cpu", dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())


def run_pipeline(config: PipelineConfig, out_dir: str | os.PathLike, resume: bool = False) -> dict[str, Any]:
    return PipelineRunner(config, out_dir).run(resume=resume)
