"""The pipeline's configuration (``openm1 run PIPELINE.toml``, ``openm1 demo``): one TOML file with a
table per concern, every field documented here and validated once, errors naming ``[table] field``.

    [pipeline]  seed, device, threads, preset, model overrides
    [task]      puzzle families, difficulty, split sizes
    [eval]      held-out evaluation after each stage
    [pretrain]  openm1.train.TrainConfig fields (steps = 0 skips the stage)
    [sft]       openm1.train.TrainConfig fields (steps = 0 skips the stage)
    [rl]        openm1.rl.RLConfig fields (steps = 0 skips the stage)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from openm1.config import PRESETS, ModelConfig, preset
from openm1.pipeline.tasks import TRACES
from openm1.rewards.logic import MAX_DIFFICULTY
from openm1.train import TrainConfig

STAGES = ("pretrain", "sft", "rl")


@dataclass
class PipelineSection:
    seed: int = 0
    """Seeds the model's initial weights, the data splits, the data order and the RL sampling."""
    device: str = "cpu"
    """cpu, cuda, cuda:1 ... or auto (cuda when available)."""
    threads: int = 0
    """CPU threads for torch (0: leave torch's default). On a busy machine 1 avoids oversubscription."""
    preset: str = "tiny"
    """Model preset (openm1.config.PRESETS); its vocabulary must fit the byte tokenizer (>= 261)."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of the preset's ModelConfig fields, e.g. {num_hidden_layers = 4, layer_types = [...]}."""


@dataclass
class TaskSection:
    families: list[str] = field(default_factory=lambda: ["arithmetic", "counting"])
    """Puzzle families (openm1.rewards.logic) with chain-of-thought writers: see pipeline/tasks.py."""
    difficulty: int = 1
    """Difficulty of every puzzle (1 = easiest)."""
    eval_size: int = 200
    """Held-out prompts, evaluated after every stage; never in the SFT, pretraining or RL data."""
    rl_size: int = 1000
    """RL prompts; never in the SFT or pretraining data."""
    sft_size: int = 3000
    """SFT prompt/response pairs with worked chains of thought."""
    pretrain_size: int = 3000
    """Pretraining documents: questions with worked solutions as plain text."""


@dataclass
class EvalSection:
    samples: int = 4
    """Sampled answers per held-out prompt: the accuracy is pass@1 averaged over them."""
    temperature: float = 1.0
    """Sampling temperature of the evaluation (the paper evaluates at 1.0)."""
    top_p: float = 1.0
    """Nucleus sampling of the evaluation."""
    greedy: bool = True
    """Also report greedy (temperature 0) accuracy."""
    max_new_tokens: int = 96
    """Generation limit of an answer."""
    show: int = 4
    """Sample answers per stage written to samples.md."""


@dataclass
class PipelineConfig:
    pipeline: PipelineSection = field(default_factory=PipelineSection)
    task: TaskSection = field(default_factory=TaskSection)
    eval: EvalSection = field(default_factory=EvalSection)
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(steps=100, progress=True))
    sft: TrainConfig = field(default_factory=lambda: TrainConfig(steps=100, progress=True))
    rl: Any = None
    """An RLConfig (None: RL skipped)."""

    def model_config(self) -> ModelConfig:
        cfg = preset(self.pipeline.preset)
        if self.pipeline.model:
            known = {f.name for f in fields(ModelConfig)}
            unknown = sorted(set(self.pipeline.model) - known)
            if unknown:
                raise ValueError(
                    f"[pipeline] model has unknown field(s) {unknown}; valid: ModelConfig fields"
                )
            over = dict(self.pipeline.model)
            if "num_hidden_layers" in over and "layer_types" not in over:
                from openm1.config import hybrid_layer_types

                over["layer_types"] = hybrid_layer_types(
                    over["num_hidden_layers"], min(8, over["num_hidden_layers"])
                )
            cfg = cfg.replace(**over)
        return cfg

    def validate(self) -> PipelineConfig:
        p, t, e = self.pipeline, self.task, self.eval
        if p.preset not in PRESETS:
            raise ValueError(f"[pipeline] preset {p.preset!r} is unknown; choose one of {sorted(PRESETS)}")
        if not isinstance(p.threads, int) or p.threads < 0:
            raise ValueError(f"[pipeline] threads must be an integer >= 0, got {p.threads!r}")
        model = self.model_config()
        if model.vocab_size < 261:
            raise ValueError(
                f"[pipeline] the model's vocab_size {model.vocab_size} is too small for the byte tokenizer "
                "(needs 261)"
            )
        bad = [f for f in t.families if f not in TRACES]
        if not t.families or bad:
            raise ValueError(f"[task] families {bad or []} not supported; choose from {sorted(TRACES)}")
        if not isinstance(t.difficulty, int) or not 1 <= t.difficulty <= MAX_DIFFICULTY:
            raise ValueError(
                f"[task] difficulty must be an integer in [1, {MAX_DIFFICULTY}], got {t.difficulty!r}"
            )
        for name in ("eval_size", "rl_size", "sft_size", "pretrain_size"):
            v = getattr(t, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"[task] {name} must be an integer >= 1, got {v!r}")
        if not isinstance(e.samples, int) or e.samples < 1:
            raise ValueError(f"[eval] samples must be an integer >= 1, got {e.samples!r}")
        if not 0 < e.temperature <= 10 or not 0 < e.top_p <= 1:
            raise ValueError("[eval] temperature must be in (0, 10] and top_p in (0, 1]")
        if not isinstance(e.max_new_tokens, int) or e.max_new_tokens < 1:
            raise ValueError(f"[eval] max_new_tokens must be an integer >= 1, got {e.max_new_tokens!r}")
        for stage in ("pretrain", "sft"):
            cfg: TrainConfig = getattr(self, stage)
            if cfg.context_stages.max_len > model.max_position_embeddings:
                raise ValueError(
                    f"[{stage}] seq_len {cfg.context_stages.max_len} exceeds the model's "
                    f"max_position_embeddings "
                    f"{model.max_position_embeddings}"
                )
        if self.rl is not None:
            if self.rl.prompts_per_step > t.rl_size:
                raise ValueError(
                    f"[rl] prompts_per_step ({self.rl.prompts_per_step}) is larger than the RL prompt set "
                    f"([task] rl_size = {t.rl_size})"
                )
            if e.max_new_tokens < max(self.rl.length_stages):
                raise ValueError(
                    f"[eval] max_new_tokens ({e.max_new_tokens}) is below the RL generation limit "
                    f"({max(self.rl.length_stages)}): the evaluation would cut answers RL allows"
                )
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        from openm1.rl import RLConfig

        allowed = {"pipeline", "task", "eval", *STAGES}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"unknown table(s) {unknown}; a pipeline file has {sorted(allowed)}")
        kw: dict[str, Any] = {}
        for name, klass in (("pipeline", PipelineSection), ("task", TaskSection), ("eval", EvalSection)):
            kw[name] = _section(klass, d.get(name, {}), name)
        for stage in ("pretrain", "sft"):
            table = dict(d.get(stage, {}))
            kw[stage] = _skipped() if table.get("steps") == 0 else TrainConfig.from_dict(table, stage)
        rl = dict(d.get("rl", {}))
        if rl.get("steps", 1) == 0:
            kw["rl"] = None
        else:
            try:
                kw["rl"] = RLConfig(**rl)
            except TypeError as e:
                known = sorted(f.name for f in fields(RLConfig))
                raise ValueError(f"[rl] {e}; valid fields: {known}") from None
            except ValueError as e:
                raise ValueError(f"[rl] {e}") from None
        return cls(**kw).validate()

    @classmethod
    def load(cls, path: str | os.PathLike) -> PipelineConfig:
        import tomllib

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pipeline file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path} is not valid TOML: {e}") from None
        return cls.from_dict(data)


def _skipped() -> TrainConfig:
    """A stage that does not run (steps = 0 in the file)."""
    cfg = TrainConfig(steps=1)
    cfg.steps = 0
    return cfg


def _section(klass: type, table: Any, name: str) -> Any:
    if not isinstance(table, dict):
        raise ValueError(f"[{name}] must be a table")
    known = {f.name for f in fields(klass)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"[{name}] has unknown field(s) {unknown}; valid fields: {sorted(known)}")
    return klass(**table)
