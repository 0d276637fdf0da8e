"""``openm1 rl``: example configs are valid, a run writes metrics and a checkpoint and resumes, a prompt
file's malformed rows are reported by line and skipped, bad fields are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from openm1.cli import main
from openm1.commands.rl import MODEL_KEYS, TASK_KEYS, build_tasks, read_prompt_file
from openm1.rl import RLConfig
from openm1.rl.config import load_config_file

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("rl-*.toml"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    data = load_config_file(path)
    assert set(data) <= {"model", "tasks", "rl"}
    assert set(data.get("model", {})) <= MODEL_KEYS and set(data.get("tasks", {})) <= TASK_KEYS
    config = RLConfig.from_dict(data.get("rl", {}))
    if "families" in data.get("tasks", {}):
        tasks, held_out = build_tasks(data["tasks"], config.seed)
        assert len(held_out) == data["tasks"].get("eval_size", 32)
        assert tasks.batch(0, 2)[0].prompt


def _write(tmp_path: Path, tasks: str, rl: str = "") -> Path:
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        '[model]\npath = "tiny"\ndevice = "cpu"\n\n[tasks]\n'
        + tasks
        + "\n[rl]\ngroup_size = 2\nprompts_per_step = 2\nlength_stages = [4]\nsteps = 1\nprogress = false\n"
        + "plots = false\ntensorboard = false\n"
        + rl
    )
    return cfg


def test_rl_run_writes_a_checkpoint_and_resumes(tmp_path, capsys):
    cfg = _write(tmp_path, 'families = ["sorting"]\neval_size = 2\n')
    out = tmp_path / "out"
    assert main(["rl", "--config", str(cfg), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 1 and "eval/accuracy" in summary
    assert (out / "checkpoint" / "model" / "config.json").is_file()
    assert main(["rl", "--config", str(cfg), "--out", str(out)]) == 2  # would overwrite: refused
    assert "--resume" in capsys.readouterr().err
    assert main(["rl", "--config", str(cfg), "--out", str(out), "--resume", "--steps", "2"]) == 0
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # the trained weights are a checkpoint folder that openm1 rl (and generate) load as a model
    cfg2 = tmp_path / "again.toml"
    cfg2.write_text(cfg.read_text().replace('path = "tiny"', f'path = "{out / "checkpoint" / "model"}"'))
    assert main(["rl", "--config", str(cfg2), "--out", str(tmp_path / "out2")]) == 0


def test_prompt_file_with_malformed_rows(tmp_path, capsys):
    rows = tmp_path / "prompts.jsonl"
    rows.write_text(
        '{"prompt": "What is 1+1?", "answer": "2"}\n'
        "not json\n"
        '{"prompt": "", "answer": "3"}\n'
        '{"prompt": "What is 2+2?"}\n'
        "\n"
        '{"prompt": "What is 3+3?", "answer": "6"}\n'
        '{"prompt": "What is 4+4?", "reference": "8", "id": 7}\n'
    )
    tasks = read_prompt_file(rows, reward=lambda *a, **k: 0.0)
    err = capsys.readouterr().err
    assert [t.reference for t in tasks] == ["2", "6", "8"] and tasks[2].meta == {"id": 7}
    for line in (2, 3, 4):
        assert f"prompts.jsonl:{line}:" in err
    cfg = _write(tmp_path, 'file = "prompts.jsonl"\nreward = "format"\neval_size = 1\n')
    assert main(["rl", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 0
    assert "prompts.jsonl:2:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tasks", "rl", "named"),
    [
        ('families = ["sorting"]\n', "learning_rate = 0.1\n", "learning_rate"),
        ('families = ["sorting"]\n', 'algo = "reinforce"\n', "algo"),
        ('families = ["sudoku"]\n', "", "sudoku"),
        ('families = ["sorting"]\nbatch = 3\n', "", "batch"),
    ],
)
def test_bad_fields_are_named(tmp_path, capsys, tasks, rl, named):
    cfg = _write(tmp_path, tasks, rl)
    assert main(["rl", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert named in capsys.readouterr().err
