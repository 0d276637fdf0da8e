"""The trainers under ``torchrun --nproc-per-node 2`` (CPU, gloo) against one process on the same data.

One launch (``trainer_worker.py``) runs ``Trainer`` 5 steps with FSDP2 and with EP 2 + FSDP2 (2 packed
rows per step, one per rank), resumes a one-process checkpoint on 2 ranks, and runs one ``RLTrainer``
step (ep 1 and 2; 4 minibatch updates, a rank sometimes without rows). Tolerance: float32 on both
sides, only the summation order differs (FSDP's reduce-scatter, the clipping norm's sum): losses and
gradient norms ``rtol 1e-5``; weights after 5 AdamW steps at lr 1e-2 ``atol 5e-5`` (about 1e-7 here,
1e-5 after the RL step's 4 updates), as in ``test_distributed.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from openm1.model.model import MiniMaxM1ForCausalLM
from openm1.rl import RLTrainer
from openm1.train import Trainer
from tests.distributed.test_distributed import assert_states_equal, launch
from tests.distributed.trainer_common import (
    SAVE_AT,
    STEPS,
    rl_config,
    rl_model,
    rl_run,
    train_config,
    train_data,
    train_model,
)

WORKER = Path(__file__).with_name("trainer_worker.py")
RTOL = {"rtol": 1e-5, "atol": 1e-6}


def copy_checkpoint(src: Path, dst: Path, step: int = SAVE_AT) -> None:
    """``src/checkpoints/step-N`` alone in ``dst/checkpoints``, as the latest."""
    name = f"step-{step:06d}"
    (dst / "checkpoints").mkdir(parents=True)
    shutil.copytree(src / "checkpoints" / name, dst / "checkpoints" / name)
    (dst / "checkpoints" / "latest").write_text(name + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("trainers")
    model = train_model()
    history = Trainer(model, train_data(), train_config(), out / "ref").train()
    copy_checkpoint(out / "ref", out / "from1")  # one process's checkpoint, resumed on 2 below
    proc = launch(out, None, worker=WORKER)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return {
        "out": out,
        "ranks": ranks,
        "history": history,
        "state": model.state_dict(),
        "rl": rl_run(out / "rl_ref"),
    }


def final_state(folder: Path) -> dict:
    return MiniMaxM1ForCausalLM.from_pretrained(folder / "final").state_dict()


def assert_history_equal(got: list[dict], want: list[dict]) -> None:
    assert [h["step"] for h in got] == [h["step"] for h in want]
    for key in ("loss", "grad_norm", "router_loss"):
        torch.testing.assert_close(
            torch.tensor([h[key] for h in got]), torch.tensor([h[key] for h in want]), **RTOL, msg=key
        )
    assert [h["tokens"] for h in got] == [h["tokens"] for h in want]


@pytest.mark.parametrize("mode", ["fsdp", "ep"])
def test_trainer_on_2_ranks_equals_one_process(run, mode):
    for rank in run["ranks"]:
        assert_history_equal(rank[mode], run["history"])
    assert max(h["grad_norm"] for h in run["history"]) > train_config().max_grad_norm  # clipping took part
    init = train_model().state_dict()
    assert max((run["state"][k] - v).abs().max().item() for k, v in init.items()) > 1e-2
    folder = run["out"] / mode
    assert_states_equal(final_state(folder), run["state"])  # the whole model, written by rank 0
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, STEPS + 1))  # rank 0 alone wrote it
    assert (folder / "checkpoints" / f"step-{SAVE_AT:06d}" / "openm1_dist.json").is_file()


def test_trainer_checkpoint_from_2_ranks_resumes_on_1(run, tmp_path):
    copy_checkpoint(run["out"] / "ep", tmp_path)  # saved with EP 2 + FSDP2
    model = train_model()
    history = Trainer(model, train_data(), train_config(), tmp_path).train(resume=True)
    assert_history_equal(history, run["history"][SAVE_AT:])
    assert_states_equal(model.state_dict(), run["state"])


def test_trainer_checkpoint_from_1_resumes_on_2(run):
    for rank in run["ranks"]:
        assert_history_equal(rank["from1"], run["history"][SAVE_AT:])
    assert_states_equal(final_state(run["out"] / "from1"), run["state"])


@pytest.mark.parametrize("mode", ["rl", "rl_ep"])
def test_rl_step_on_2_ranks_equals_one_process(run, mode):
    want = run["rl"]
    assert float(want["rollouts"]["rewards"].std()) > 0  # the advantages are not all zero
    assert want["metrics"]["updates"] == rl_config().minibatches
    for rank in run["ranks"]:
        got = rank[mode]
        # each rank sampled its share with the seeds one process uses, and received the whole batch
        assert got["rollouts"]["responses"] == want["rollouts"]["responses"]
        assert got["rollouts"]["prompts"] == want["rollouts"]["prompts"]
        torch.testing.assert_close(got["rollouts"]["rewards"], want["rollouts"]["rewards"], rtol=0, atol=0)
        for key in ("loss", "grad_norm", "entropy", "reward/mean", "reward/std"):
            torch.testing.assert_close(
                torch.tensor(got["metrics"][key]), torch.tensor(want["metrics"][key]), **RTOL, msg=key
            )
        assert got["metrics"]["updates"] == want["metrics"]["updates"]
        assert_states_equal(got["state"], want["state"])  # every rank's rollout copy is updated
    init = rl_model().state_dict()
    assert max((want["state"][k] - v).abs().max().item() for k, v in init.items()) > 1e-2


def test_rl_checkpoint_from_2_ranks_loads_in_one_process(run):
    from openm1.generate.tokenizer import ByteTokenizer
    from openm1.rl.curriculum import Task

    tasks = [Task("x", None, lambda *a, **k: 0.0, "toy", "rule")]
    trainer = RLTrainer(rl_model(), ByteTokenizer(512), tasks, rl_config(), run["out"] / "rl")
    assert trainer.load_checkpoint() and trainer.step == 1 and trainer.updates == rl_config().minibatches
    assert_states_equal(trainer.model.state_dict(), run["ranks"][0]["rl"]["state"], atol=0)


def test_bad_layouts_error_on_every_rank(run):
    for rank in run["ranks"]:
        ep, rows = rank["mesh_errors"]
        assert "ep=3 does not divide the 2 processes" in ep and "choose ep in [1, 2]" in ep
        assert "grad_accum = 3 rows per step cannot be split over 2 processes" in rows


PIPELINE = """
[pipeline]
seed = 0
device = "cpu"
threads = 1
preset = "tiny"
[task]
families = ["arithmetic"]
eval_size = 4
rl_size = 16
sft_size = 40
pretrain_size = 40
[eval]
samples = 1
greedy = false
max_new_tokens = 8
[pretrain]
steps = 3
seq_len = 128
grad_accum = 2
ep = 2
progress = false
[sft]
steps = 2
seq_len = 128
grad_accum = 2
progress = false
[rl]
steps = 1
group_size = 2
prompts_per_step = 2
length_stages = [8]
progress = false
"""


def torchrun_module(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    import os
    import sys

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone"]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*cmd, "-m", "openm1", *args], env=env, capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.mark.slow
def test_torchrun_openm1_run_pipeline(tmp_path):
    """``torchrun -m openm1 run``: every stage on 2 processes (pretraining with EP 2), one report."""
    (tmp_path / "p.toml").write_text(PIPELINE)
    proc = torchrun_module(["run", "p.toml", "--out", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("== pretrain\n") == 1  # rank 0 alone prints
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert list(state["stages"]) == ["pretrain", "sft", "rl"]
    for stage in state["stages"]:
        MiniMaxM1ForCausalLM.from_pretrained(tmp_path / "out" / stage / "final")
    assert (tmp_path / "out" / "report.md").is_file()


@pytest.mark.slow
def test_torchrun_openm1_rl_then_resume_in_one_process(tmp_path):
    """``torchrun -m openm1 rl`` writes a distributed checkpoint; ``openm1 rl --resume`` continues it."""
    import os
    import sys

    config = "[model]\npath = 'tiny'\n[tasks]\nfamilies = ['sorting']\neval_size = 2\n[rl]\n"
    config += "group_size = 2\nprompts_per_step = 2\nlength_stages = [8]\nsteps = 1\nprogress = false\n"
    (tmp_path / "rl.toml").write_text(config)
    proc = torchrun_module(["rl", "--config", "rl.toml", "--out", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "out" / "checkpoint" / "openm1_dist.json").is_file()
    args = ["rl", "--config", "rl.toml", "--out", "out", "--resume", "--steps", "2"]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    one = subprocess.run([sys.executable, "-m", "openm1", *args], cwd=tmp_path, env=env, capture_output=True)
    assert one.returncode == 0, one.stderr[-4000:]
    steps = [json.loads(x)["step"] for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
