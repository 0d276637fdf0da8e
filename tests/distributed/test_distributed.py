"""FSDP2, expert parallelism and distributed checkpoints on 2 CPU processes (gloo) against one process.

One ``torchrun`` launch (``worker.py main``) trains the tiny model 3 AdamW steps with FSDP2 and with
EP=2 + FSDP2; the tests compare its losses, logits, gradients and weights with the single-process run
of :func:`tests.distributed.common.reference_run` on the same data. Tolerance: float32 on both sides,
differing only in summation order across ranks: ``rtol=1e-5, atol=1e-6`` for losses, logits and
gradients, ``atol=5e-5`` for weights after 3 AdamW steps at lr 1e-2 (0.5% of one step: Adam's division
by ``sqrt(v)`` magnifies last-bit gradient differences on rarely-seen embedding rows to about 2e-5).

Every launch runs under a subprocess timeout, so a hang fails the test instead of blocking CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openm1.analysis.plan import GPUS, Layout, Workload, plan
from openm1.distributed import (
    DistCheckpointError,
    MeshError,
    check_mesh,
    dcp_to_transformers,
    load_distributed,
    save_distributed,
    transformers_to_dcp,
)
from openm1.model.model import MiniMaxM1ForCausalLM
from openm1.rl.advantages import group_advantages
from tests.distributed.common import CLIP, RL_GROUP, build_model, config, optimizer, reference_run, rl_batch

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
LAUNCH_TIMEOUT_S = 240
CLOSE = {"rtol": 1e-5, "atol": 1e-6}


def launch(
    out: Path,
    scenario: str | None,
    timeout: float = LAUNCH_TIMEOUT_S,
    nproc: int = 2,
    worker: Path = WORKER,
    **env: str,
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--standalone",
        str(worker),
        str(out),
        *([scenario] if scenario else []),
    ]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    try:
        return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun {scenario} did not finish in {timeout} s (a hang): {e.stderr!s:.2000}")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dist")
    proc = launch(out, "main")
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return {"out": out, "ranks": ranks, "ref": reference_run(record_first=True)}


def assert_states_equal(got: dict, want: dict, atol: float = 5e-5) -> None:
    assert set(got) >= {k for k in want if not k.endswith(("inv_freq", "decay", "slope_rate"))}
    for name, value in got.items():
        torch.testing.assert_close(value, want[name], rtol=1e-5, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("mode", ["fsdp", "ep", "ep_ac"])
def test_losses_and_weights_equal_single_process(run, mode):
    got, ref = run["ranks"][0][mode], run["ref"]
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(ref["losses"]), **CLOSE)
    torch.testing.assert_close(torch.tensor(got["norms"]), torch.tensor(ref["norms"]), **CLOSE)
    assert max(ref["norms"]) > CLIP  # clipping took part
    init = build_model().state_dict()  # the steps moved the weights, so the comparison means something
    assert max((ref["state"][k] - v).abs().max().item() for k, v in init.items()) > 1e-2
    assert_states_equal(got["state"], ref["state"])


@pytest.mark.parametrize("mode", ["fsdp", "ep", "ep_ac"])
def test_first_step_logits_and_gradients(run, mode):
    got, ref = run["ranks"][0][mode], run["ref"]
    for r in range(2):
        torch.testing.assert_close(got["logits"][r], ref["logits"][r], **CLOSE)
    assert set(got["grads"]) == set(ref["grads"])
    for name, g in got["grads"].items():
        torch.testing.assert_close(g, ref["grads"][name], **CLOSE, msg=lambda m, n=name: f"grad {n}: {m}")
    experts = ref["grads"]["model.layers.0.mlp.experts.gate_up_proj"]
    assert experts.abs().sum(dim=(1, 2)).gt(0).all()  # every expert got tokens (so EP moved some)


@pytest.mark.parametrize(("mode", "ep"), [("fsdp", 1), ("ep", 2)])
def test_planner_predicts_the_sharded_state(run, mode, ep):
    """What each rank really holds equals what `openm1 plan` says for fsdp 2 (all ranks), ep 1 or 2."""
    want = plan(config(), GPUS["H100"], Layout(fsdp=2, ep=ep), Workload(seq_len=16)).memory
    for rank in run["ranks"]:
        assert rank[mode]["held"]["param_bytes"] == want.weights
        assert rank[mode]["held"]["optimizer_bytes"] == want.optimizer


def test_checkpoint_saved_on_2_resumes_on_1(run):
    model = build_model()
    opt = optimizer(model)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    extra = load_distributed(run["out"] / "ckpt", model, opt)
    assert extra == {"step": 3}
    assert_states_equal(model.state_dict(), run["ranks"][0]["ep"]["state"], atol=0)
    ref_opt = run["ref"]["optim"]
    ref_names = dict(run["ref"]["model"].named_parameters())
    for name, p in model.named_parameters():
        want, got = ref_opt.state[ref_names[name]], opt.state[p]
        torch.testing.assert_close(got["exp_avg"], want["exp_avg"], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(got["exp_avg_sq"], want["exp_avg_sq"], rtol=1e-4, atol=1e-9)
        assert float(got["step"]) == float(want["step"]) == 3


def test_dcp_to_and_from_transformers_layout(run, tmp_path):
    hf = dcp_to_transformers(run["out"] / "ckpt", tmp_path / "hf")
    loaded = MiniMaxM1ForCausalLM.from_pretrained(hf)
    assert_states_equal(loaded.state_dict(), run["ranks"][0]["ep"]["state"], atol=0)
    assert len(list(hf.glob("*.safetensors"))) == 2 + config().num_hidden_layers + 1  # one file per unit
    half = MiniMaxM1ForCausalLM.from_pretrained(
        dcp_to_transformers(run["out"] / "ckpt", tmp_path / "bf16", "bfloat16")
    )
    assert half.model.embed_tokens.weight.dtype == torch.bfloat16
    torch.testing.assert_close(half.model.embed_tokens.weight, loaded.model.embed_tokens.weight.bfloat16())
    back = transformers_to_dcp(hf, tmp_path / "dcp")
    again = build_model()
    load_distributed(back, again)
    assert_states_equal(again.state_dict(), loaded.state_dict(), atol=0)


def test_meta_build_shard_and_resume(run):
    for rank in run["ranks"]:
        meta = rank["meta"]
        assert meta["extra"] == {"step": 3} and meta["same_logits"]
        assert meta["init_std"] == pytest.approx(config().initializer_range, rel=0.05)


def test_rollout_weights_reach_every_rank(run):
    for rank in run["ranks"]:
        assert_states_equal(rank["rollout_state"], run["ranks"][0]["ep"]["state"], atol=0)


def test_group_advantages_and_token_count_across_ranks(run):
    rewards, mask, _ = rl_batch()
    got = torch.cat([rank["rl"]["advantages"] for rank in run["ranks"]])
    torch.testing.assert_close(got, group_advantages(rewards, RL_GROUP))
    for rank in run["ranks"]:
        assert float(rank["rl"]["tokens"]) == float(mask.sum())


def test_bad_mesh_errors_on_every_rank(run):
    for rank in run["ranks"]:
        first, second = rank["mesh_errors"]
        assert "ep=3 does not divide the 2 processes" in first and "choose ep in [1, 2]" in first
        assert "ep=2 does not divide the 3 experts" in second


def test_failed_save_leaves_nothing_and_raises_everywhere(run):
    for rank in run["ranks"]:
        assert "saving" in rank["failed_save"] and "disk full (simulated)" in rank["failed_save"]
    assert run["ranks"][0]["failed_save_leftovers"] == []
    assert not any("broken" in p.name for p in run["out"].iterdir())


def test_check_mesh_in_process():
    with pytest.raises(MeshError, match="ep=0"):
        check_mesh(2, 4, 0)
    with pytest.raises(MeshError, match="does not divide the 4 experts"):
        check_mesh(24, 4, 3)
    check_mesh(4, 8, 2)


def test_checkpoint_of_another_config_is_refused(tmp_path):
    save_distributed(tmp_path / "ckpt", build_model())
    other = MiniMaxM1ForCausalLM(config().replace(intermediate_size=64))
    with pytest.raises(DistCheckpointError, match="another model configuration.*intermediate_size"):
        load_distributed(tmp_path / "ckpt", other)
    with pytest.raises(DistCheckpointError, match="no optimizer state"):
        load_distributed(tmp_path / "ckpt", build_model(), optimizer(build_model()))
    with pytest.raises(DistCheckpointError, match="no openm1_dist.json"):
        load_distributed(tmp_path, build_model())


def test_overwrite_keeps_old_until_new_is_complete(tmp_path, monkeypatch):
    import openm1.distributed.checkpoint as ck

    model = build_model()
    save_distributed(tmp_path / "ckpt", model, extra={"step": 1})

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ck, "atomic_write_text", fail)
    with pytest.raises(DistCheckpointError, match="nothing was written"):
        save_distributed(tmp_path / "ckpt", model, extra={"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert load_distributed(tmp_path / "ckpt", build_model()) == {"step": 1}


def test_silent_rank_times_out(tmp_path):
    """Rank 1 stays alive but never joins the collective: rank 0 errors after the 5 s timeout."""
    proc = launch(tmp_path, "hang", timeout=120, HANG_TIMEOUT="5")
    assert proc.returncode != 0
    import json

    result = json.loads((tmp_path / "hang.json").read_text())
    assert result["error"] is not None, "the collective returned although rank 1 never joined"
    assert "Timed out" in result["error"]


@pytest.mark.slow
def test_dead_rank_ends_the_job(tmp_path):
    """Rank 1 exits at once: the job ends with an error (torchrun stops rank 0), well before the timeout."""
    proc = launch(tmp_path, "dead", timeout=120, HANG_TIMEOUT="60")
    assert proc.returncode != 0
    assert "exitcode  : 3" in proc.stderr  # torchrun names the rank that died


@pytest.mark.slow
def test_four_processes_fsdp2_by_ep2(tmp_path):
    """dp=2 x ep=2: experts FSDP-sharded over dp as well as split over ep."""
    proc = launch(tmp_path, "main", nproc=4)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = torch.load(tmp_path / "rank0.pt", weights_only=False)
    ref = reference_run(record_first=True, world=4)
    for mode in ("fsdp", "ep", "ep_ac"):
        torch.testing.assert_close(torch.tensor(got[mode]["losses"]), torch.tensor(ref["losses"]), **CLOSE)
        assert_states_equal(got[mode]["state"], ref["state"])
        for name, g in got[mode]["grads"].items():
            torch.testing.assert_close(g, ref["grads"][name], **CLOSE)


def test_bad_torchrun_environment(monkeypatch):
    from openm1.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(MeshError, match="RANK=2 is outside WORLD_SIZE=2"):
        init_distributed()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(MeshError, match="RANK='one' is not an integer"):
        init_distributed()
    with pytest.raises(MeshError, match="timeout must be positive"):
        init_distributed(timeout_s=0)
