"""The planner's arithmetic against hand-computed cases, its validation, the search and the CLI."""

from __future__ import annotations

import json

import pytest

from openm1.analysis.params import count_params
from openm1.analysis.plan import (
    GPUS,
    Assumptions,
    Layout,
    LayoutError,
    Workload,
    forward_flops_per_token,
    min_gpus,
    plan,
    suggest,
    validate,
)
from openm1.cli import main
from openm1.config import ModelConfig, hybrid_layer_types, preset


def hand_config() -> ModelConfig:
    """Small enough to count by hand: 1 lightning + 1 softmax layer, hidden 8, 4 experts of width 6."""
    return ModelConfig(
        vocab_size=100,
        hidden_size=8,
        num_hidden_layers=2,
        layer_types=hybrid_layer_types(2, softmax_every=2),
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        block_size=4,
        rotary_dim=4,
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=6,
    )


def test_hand_config_param_count():
    # embed 800 + head 800 + lightning (qkv 192, gate 64, out 64, norm 8) + softmax (q 64, k 32, v 32,
    # o 64) + router 2*8*4 + experts 2*4*3*8*6 + layer norms 2*2*8 + final norm 8
    p = count_params(hand_config())
    assert p.total == 3376
    assert p.experts == 1152


def test_memory_by_hand():
    cfg = hand_config()
    w = Workload(seq_len=16, micro_batch=1, activation_checkpointing=True)
    pl = plan(cfg, GPUS["H100"], Layout(fsdp=2, ep=2), w)
    # per GPU: dense 2224 / 2 + experts 1152 / (ep 2 x expert shard 1) = 1688 parameters
    assert pl.memory.weights == 1688 * 4
    assert pl.memory.gradients == 1688 * 4
    assert pl.memory.optimizer == 1688 * 8
    # largest FSDP unit: the 800-parameter embedding (a block is 308 dense + 1152/2/2 experts = 596)
    assert pl.memory.unsharded == 800 * (2 + 2 + 4)
    # AC: 2 layers x hidden 8 block inputs + the lightning layer's 224 elements, 16 tokens, bf16.
    # lightning: 4h + k(2h + 4I) + h = 120, + 11 HD = 88, + 2 H D^2 / block = 16  -> 224
    assert pl.memory.activations == (2 * 8 + 224) * 16 * 2
    assert pl.memory.logits == 2 * 16 * 100 * 4
    no_ac = plan(
        cfg, GPUS["H100"], Layout(fsdp=2, ep=2), Workload(seq_len=16, activation_checkpointing=False)
    )
    # softmax layer: 120 + 3 HD (24) + 4 KV D (16) = 160
    assert no_ac.memory.activations == (224 + 160) * 16 * 2


def test_flops_and_comm_by_hand():
    cfg = hand_config()
    # matmul: 2 x (attention 320 + 192, router 64, 2 of 4 experts 576, head 800) = 3904
    # softmax: 4 H D x 16/2 = 256; lightning: 4 H D x block/2 + 4 H D^2 = 64 + 128
    assert forward_flops_per_token(cfg, 16) == 3904 + 256 + 192
    pl = plan(cfg, GPUS["H100"], Layout(fsdp=2, ep=2), Workload(seq_len=16))
    assert pl.time.flops_per_token == 4 * 4352  # forward, recompute, backward (2x)
    # FSDP: dense 2224 params gathered twice in bf16 and reduce-scattered in fp32 over 2 ranks
    assert pl.time.comm_bytes["fsdp_dense"] == 2224 / 2 * (2 + 2 + 4)
    assert pl.time.comm_bytes["fsdp_experts"] == 0  # each EP slice lives on one rank
    # EP: 2 layers x 16 tokens x top-2 x hidden 8 x bf16, half leaves the rank, dispatch+combine, 3 passes
    assert pl.time.comm_bytes["ep_all_to_all"] == 2 * 16 * 2 * 8 * 2 * 0.5 * 2 * 3
    gpu = GPUS["H100"]
    assert pl.time.compute == pytest.approx(4 * 4352 * 16 / (gpu.bf16_flops * 0.4))
    assert pl.time.tokens_per_step == 2 * 16


def test_m1_weights_and_rollout_cache():
    cfg = preset("minimax-m1")
    total = count_params(cfg).total
    w = Workload(seq_len=8192, rollout_len=1024**2, rollout_seqs=1)
    pl = plan(cfg, GPUS["H800"], Layout(fsdp=512, ep=8), w)
    assert pl.memory.weights == pytest.approx(total * 4 / 512)
    assert pl.memory.optimizer == pytest.approx(total * 8 / 512)
    # one 1M-token sequence: 40 GiB of softmax KV and 280 MiB of lightning state (docs of openm1 info)
    assert pl.rollout.softmax_kv == 40 * 1024**3
    assert pl.rollout.lightning_state == 280 * 1024**2
    tp8 = plan(cfg, GPUS["H800"], Layout(fsdp=64, ep=8, tp=8), w)
    assert tp8.rollout.softmax_kv == 40 * 1024**3 / 8  # 8 KV heads split over 8 ranks
    assert tp8.memory.weights == pytest.approx(total * 4 / 512)  # the same 512-way shard


@pytest.mark.parametrize(
    ("layout", "gpus", "words"),
    [
        (Layout(fsdp=6, ep=3), 6, "does not divide the 32 experts"),
        (Layout(fsdp=2, ep=4), 2, "must divide fsdp x cp = 2"),
        (Layout(fsdp=4, tp=2), 4, "= 8, but there are 4 GPUs"),
        (Layout(fsdp=1, tp=3), 3, "tp = 3 must divide the 64 heads"),
        (Layout(fsdp=1, cp=3), 3, "cp = 3 does not divide the sequence length"),
    ],
)
def test_invalid_layouts(layout, gpus, words):
    with pytest.raises(LayoutError, match=words):
        validate(preset("minimax-m1"), layout, Workload(seq_len=8192), gpus)


def test_suggestions_fit_and_are_ranked():
    cfg = preset("minimax-m1")
    best = suggest(cfg, GPUS["H800"], 512, Workload(seq_len=8192), top=5)
    assert best and all(pl.fits and pl.layout.gpus == 512 for pl in best)
    speeds = [pl.time.tokens_per_s_per_gpu for pl in best]
    assert speeds == sorted(speeds, reverse=True)
    # on one node the 456B model's 7.3 TB of training state cannot fit
    assert suggest(cfg, GPUS["H200"], 8, Workload(seq_len=8192)) == []


def test_min_gpus_tiny_memory():
    # 16 bytes per parameter of sharded state: a GPU with room for ~1.1 copies needs 2 GPUs for hand_config
    cfg = hand_config()
    a = Assumptions(usable_memory=1.0)
    need1 = plan(cfg, GPUS["H100"], Layout(), Workload(seq_len=16), a).memory.total
    small = type(GPUS["H100"])("toy", int(need1 * 0.9), 1e12, 1e12, 1e11, 1e10)
    assert suggest(cfg, small, 1, Workload(seq_len=16), a) == []
    assert min_gpus(cfg, small, Workload(seq_len=16), a) == 2


def test_cli_json_and_errors(capsys):
    argv = ["plan", "--preset", "minimax-m1", "--gpu", "H800", "--gpus", "512", "--ep", "8", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["layout"] == {"fsdp": 512, "ep": 8, "tp": 1, "cp": 1, "replicate": 1, "gpus": 512}
    assert out["plan"]["fits"] is True and out["suggestions"]
    assert main(["plan", "--gpus", "512", "--ep", "5"]) == 2
    assert "does not divide the 32 experts" in capsys.readouterr().err
    assert main(["plan", "--gpus", "12", "--tp", "8"]) == 2
    assert "does not divide the 12 GPUs" in capsys.readouterr().err
    assert main(["plan", "--gpu", "TPU", "--gpus", "8"]) == 2
    assert "unknown GPU" in capsys.readouterr().err


def test_cli_human(capsys):
    assert (
        main(
            [
                "plan",
                "--gpus",
                "8",
                "--gpu",
                "H200",
                "--ep",
                "8",
                "--rollout-len",
                "80K",
                "--rollout-seqs",
                "4",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    for word in ("weights", "optimizer", "rollout", "does not fit", "EP all-to-all", "fewest H200s"):
        assert word in text
