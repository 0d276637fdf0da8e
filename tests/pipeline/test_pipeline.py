"""The shortened pipeline (a few steps per stage), as CI runs it, and its resume."""

import json

import pytest

from openm1.cli import main


def test_quick_demo_writes_the_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["pretrain", "sft", "rl"]
    for s in summary["stages"]:
        assert 0.0 <= s["accuracy"] <= 1.0 and s["time_s"] > 0 and s["tokens_per_s"] > 0
        assert "greedy_accuracy" in s and set(s["by_family"]) == {"variables"}
    assert "rl_gain_points" in summary
    for name in ("report.md", "samples.md", "plots/loss.png", "plots/rl.png", "plots/accuracy.png"):
        assert (out / name).is_file(), name
    assert (out / "data" / "eval.jsonl").is_file() and (out / "rl" / "final" / "config.json").is_file()
    report = (out / "report.md").read_text()
    assert "| rl |" in report and "![rl](plots/rl.png)" in report

    # a second run into the same folder must be asked to resume
    assert main(["demo", "--out", str(out), "--quick"]) == 2
    assert "--resume" in capsys.readouterr().err

    # RL was stopped before its result was recorded: resume continues from the RL checkpoint
    state = json.loads((out / "state.json").read_text())
    del state["stages"]["rl"]
    (out / "state.json").write_text(json.dumps(state))
    rl_lines = (out / "rl" / "metrics.jsonl").read_text()
    assert main(["demo", "--out", str(out), "--quick", "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in again["stages"]] == ["pretrain", "sft", "rl"]
    assert (out / "rl" / "metrics.jsonl").read_text() == rl_lines  # no RL step was run twice
    pre = summary["stages"][0]
    assert again["stages"][0] == pre  # finished stages are not rerun


@pytest.mark.parametrize("verb", ["run", "eval"])
def test_missing_files_give_a_clear_error(tmp_path, capsys, verb):
    args = (
        [verb, str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")]
        if verb == "run"
        else [verb, "tiny", "--bench", str(tmp_path / "nope.jsonl")]
    )
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_answer_spread_exposes_a_model_that_always_gives_one_answer():
    from openm1.eval.bench import BenchRow
    from openm1.pipeline.runner import answer_spread
    from openm1.rewards.logic import generate

    puzzles = [generate("counting", seed, 1) for seed in range(30)]
    rows = [
        BenchRow(str(i), "logic", p.prompt, {"family": p.family, "data": p.data})
        for i, p in enumerate(puzzles)
    ]
    always_two = [{"samples": [{"text": "<think>x</think>\nAnswer: 2"}] * 4} for _ in puzzles]
    spread = answer_spread(always_two, rows)
    assert spread["top_answer"] == "2" and spread["top_answer_share"] == 1.0
    assert spread["constant_answer_accuracy"] == sum(p.answer == "2" for p in puzzles) / len(puzzles)
    right = [{"samples": [{"text": f"Answer: {p.answer}"}, {"text": "no answer"}]} for p in puzzles]
    spread = answer_spread(right, rows)
    top_count = max(sum(p.answer == a for p in puzzles) for a in {p.answer for p in puzzles})
    assert spread["top_answer_share"] == top_count / (2 * len(puzzles))
    assert spread["constant_answer_accuracy"] == top_count / len(puzzles)


def test_the_runs_rl_and_held_out_files_are_openm1_rl_task_files(tmp_path):
    """`openm1 rl` / `openm1 experiment` read a pipeline run's splits with `reward = "logic"`."""
    from openm1.commands.rl import build_tasks
    from openm1.pipeline.data import write_data_files
    from openm1.pipeline.tasks import build_splits, question

    splits = build_splits(["counting", "variables"], 1, n_eval=6, n_rl=10, n_sft=4, n_pretrain=4)
    write_data_files(splits, tmp_path)
    table = {"file": "rl.jsonl", "eval_file": "eval-tasks.jsonl", "reward": "logic", "eval_size": 6}
    tasks, held_out = build_tasks(table, 0, tmp_path)
    assert [t.prompt for t in tasks] == [question(p) for p in splits.rl]
    assert [t.prompt for t in held_out] == [question(p) for p in splits.eval]
    for task, p in zip(tasks, splits.rl, strict=True):
        assert task.reward(task.prompt, f"Answer: {p.answer}", task.reference).score == 1.0
        assert task.reward(task.prompt, "Answer: 99", task.reference).score == 0.0
