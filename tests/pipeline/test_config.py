from pathlib import Path

import pytest
import tomllib

from openm1.pipeline import PipelineConfig, demo_config
from openm1.pipeline.demo import DEMO

CONFIGS = Path(__file__).parents[2] / "configs"


def test_the_cpu_example_is_the_demo():
    assert tomllib.loads((CONFIGS / "pipeline-cpu.toml").read_text()) == DEMO
    assert PipelineConfig.load(CONFIGS / "pipeline-cpu.toml").rl.algo == "cispo"


def test_the_gpu_example_is_valid():
    cfg = PipelineConfig.load(CONFIGS / "pipeline-gpu.toml")
    assert cfg.pipeline.device == "cuda" and cfg.pretrain.context_stages.max_len == 4096


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tasks": {}}, "unknown table"),
        ({"task": {"familes": ["arithmetic"]}}, "unknown field"),
        ({"task": {"families": ["chess"]}}, "not supported"),
        ({"task": {"difficulty": 0}}, "difficulty"),
        ({"pretrain": {"stpes": 3}}, r"\[pretrain\] has unknown field"),
        ({"sft": {"seq_len": 100_000}}, "max_position_embeddings"),
        ({"sft": {"lr": -1.0}}, r"\[sft\] lr must be positive"),
        ({"rl": {"algo": "reinforce"}}, r"(?s)\[rl\].*algo"),
        ({"rl": {"prompts_per_step": 5000}}, "larger than the RL prompt set"),
        ({"pipeline": {"preset": "huge"}}, "preset"),
        ({"eval": {"max_new_tokens": 8}}, "below the RL generation limit"),
    ],
)
def test_bad_pipeline_files_name_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        demo_config(overrides=change)


def test_a_batch_larger_than_the_data_is_refused(tmp_path):
    from openm1.pipeline.runner import PipelineRunner

    cfg = demo_config(
        quick=True, overrides={"task": {"sft_size": 2}, "sft": {"seq_len": 512, "grad_accum": 4}}
    )
    with pytest.raises(ValueError, match=r"\[sft\] one step wants"):
        PipelineRunner(cfg, tmp_path).run()
