"""Checkpoints: transformers loads what openm1 saves and vice versa; the original release's layout
loads; damaged or mismatched checkpoints fail with the tensor named and nothing loaded."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

import openm1
from openm1.config import ConfigError, ModelConfig
from openm1.model import MiniMaxM1ForCausalLM
from openm1.model import checkpoint as ckpt
from tests.model.helpers import random_config, rel_err

transformers = pytest.importorskip("transformers")


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_transformers_loads_what_openm1_saves(tmp_path):
    config = random_config(21)
    ours = MiniMaxM1ForCausalLM(config).eval()
    ours.save_pretrained(tmp_path / "m")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "m", attn_implementation="eager"
    ).eval()
    assert type(theirs).__name__ == "MiniMaxForCausalLM"
    ids = torch.randint(0, config.vocab_size, (2, 3 * config.block_size + 1))
    assert rel_err(_logits(ours, ids), _logits(theirs, ids)) < 1e-4


def test_openm1_loads_what_transformers_saves(tmp_path):
    from tests.model.helpers import hf_config

    config = random_config(22)
    theirs = transformers.MiniMaxForCausalLM(hf_config(config)).eval()
    theirs.save_pretrained(tmp_path / "hf")
    ours = openm1.from_pretrained(tmp_path / "hf")
    assert ours.config.layer_types == config.layer_types
    assert ours.config.rotary_dim == config.head_dim  # transformers' convention: the whole head
    ids = torch.randint(0, config.vocab_size, (1, 2 * config.block_size + 3))
    assert rel_err(_logits(ours, ids), _logits(theirs, ids)) < 1e-4


def test_sharded_roundtrip_and_resave_leaves_no_stale_shards(tmp_path):
    config = random_config(23, rotary_full=False)
    model = MiniMaxM1ForCausalLM(config).eval()
    folder = tmp_path / "sharded"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # partial rotary: transformers would differ; openm1 does not
        model.save_pretrained(folder, max_shard_bytes=20_000)
    index = json.loads((folder / ckpt.INDEX_NAME).read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and all((folder / s).is_file() for s in shards)
    loaded = openm1.from_pretrained(folder)
    ids = torch.randint(0, config.vocab_size, (1, 20))
    assert torch.equal(_logits(loaded, ids), _logits(model, ids))
    assert loaded.config == model.config

    model.save_pretrained(folder)  # now a single file
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["model.safetensors"]
    assert not (folder / ckpt.INDEX_NAME).exists()
    assert not list(folder.parent.glob(".sharded.tmp-*"))


def original_release_folder(model: MiniMaxM1ForCausalLM, folder):
    """Write ``model`` as the original MiniMaxAI release lays it out: remote-code config, per-expert
    weights, sharded with an index."""
    c = model.config
    folder.mkdir()
    config = {
        "architectures": ["MiniMaxM1ForCausalLM"],
        "auto_map": {"AutoModelForCausalLM": "modeling_minimax_m1.MiniMaxM1ForCausalLM"},
        "model_type": "minimax_m1",
        "attn_type_list": c.attn_type_list,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "rotary_dim": c.rotary_dim,
        "rope_theta": c.rope_theta,
        "num_local_experts": c.num_local_experts,
        "num_experts_per_tok": c.num_experts_per_tok,
        "vocab_size": c.vocab_size,
        "rms_norm_eps": c.rms_norm_eps,
        "block_size": c.block_size,
        "postnorm": True,
        "layernorm_linear_attention_alpha": c.linear_attn_alpha_factor,
        "layernorm_linear_attention_beta": c.linear_attn_beta_factor,
        "layernorm_full_attention_alpha": c.full_attn_alpha_factor,
        "layernorm_full_attention_beta": c.full_attn_beta_factor,
        "layernorm_mlp_alpha": c.mlp_alpha_factor,
        "layernorm_mlp_beta": c.mlp_beta_factor,
        "shared_intermediate_size": 0,
        "shared_moe_mode": "sigmoid",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config))
    state = model.state_dict()
    tensors = {}
    for name, slot in ckpt.disk_layout(c).items():
        t = state[slot.param]
        tensors[name] = (t[slot.index] if slot.index else t).contiguous().clone()
    names = sorted(tensors)
    thirds = [names[0::3], names[1::3], names[2::3]]
    weight_map = {}
    for k, part in enumerate(thirds):
        fname = f"model-{k:05d}-of-00003.safetensors"
        save_file({n: tensors[n] for n in part}, str(folder / fname))
        weight_map |= {n: fname for n in part}
    (folder / ckpt.INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_original_release_layout_loads_to_the_same_model(tmp_path):
    config = random_config(24, rotary_full=False)
    model = MiniMaxM1ForCausalLM(config).eval()
    original_release_folder(model, tmp_path / "orig")
    loaded = openm1.from_pretrained(tmp_path / "orig")
    assert loaded.config.rotary_dim == config.head_dim // 2
    assert loaded.config.layer_types == config.layer_types
    ids = torch.randint(0, config.vocab_size, (2, 2 * config.block_size + 1))
    assert torch.equal(_logits(loaded, ids), _logits(model, ids))


def test_loads_to_requested_dtype(tmp_path):
    config = random_config(25)
    MiniMaxM1ForCausalLM(config).save_pretrained(tmp_path / "m")
    model = openm1.from_pretrained(tmp_path / "m", dtype="bf16")
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.lm_head.weight.dtype == torch.float32  # the paper's FP32 head
    assert model.model.layers[0].mlp.experts.gate_up_proj.dtype == torch.bfloat16


# ---------------------------------------------------------------------- damaged and mismatched checkpoints
@pytest.fixture
def saved(tmp_path):
    config = random_config(26)
    model = MiniMaxM1ForCausalLM(config)
    model.save_pretrained(tmp_path / "m", max_shard_bytes=30_000)
    return tmp_path / "m", config


def _rewrite(folder, name, change):
    """Apply ``change(dict_of_tensors)`` to the shard that holds ``name``."""
    from safetensors.torch import load_file

    index = json.loads((folder / ckpt.INDEX_NAME).read_text())
    fname = index["weight_map"][name]
    tensors = load_file(str(folder / fname))
    change(tensors)
    save_file(tensors, str(folder / fname))
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if k in tensors or v != fname}
    index["weight_map"] |= {k: fname for k in tensors}
    (folder / ckpt.INDEX_NAME).write_text(json.dumps(index))


def _never_read(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("weights were read although the checkpoint was invalid")

    monkeypatch.setattr(ckpt, "safe_open", fail)


def test_missing_tensor_is_named_before_any_weight_is_read(saved, monkeypatch):
    folder, config = saved
    name = "model.layers.1.block_sparse_moe.experts.0.w2.weight"
    _rewrite(folder, name, lambda t: t.pop(name))
    _never_read(monkeypatch)
    with pytest.raises(
        ckpt.CheckpointError, match=r"missing tensor .*experts\.0\.w2\.weight.*expected shape"
    ):
        openm1.from_pretrained(folder)


def test_wrong_shape_names_expected_and_found(saved, monkeypatch):
    folder, config = saved
    name = "model.layers.0.input_layernorm.weight"
    _rewrite(folder, name, lambda t: t.__setitem__(name, torch.ones(config.hidden_size + 1)))
    _never_read(monkeypatch)
    with pytest.raises(ckpt.CheckpointError) as err:
        openm1.from_pretrained(folder)
    msg = str(err.value)
    assert name in msg and f"[{config.hidden_size + 1}]" in msg and f"expected [{config.hidden_size}]" in msg


def test_truncated_shard_is_reported(saved):
    folder, _ = saved
    shard = sorted(folder.glob("*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(ckpt.CheckpointError, match=f"{shard.name} is truncated"):
        openm1.from_pretrained(folder)


def test_checkpoint_of_another_configuration_is_refused(saved, monkeypatch):
    folder, config = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_local_experts"] = config.num_local_experts + 2
    (folder / "config.json").write_text(json.dumps(cfg))
    _never_read(monkeypatch)
    with pytest.raises(ckpt.CheckpointError, match="missing tensor"):
        openm1.from_pretrained(folder)


def test_unexpected_tensors_refused_unless_not_strict(saved):
    folder, _ = saved
    name = "model.norm.weight"
    _rewrite(folder, name, lambda t: t.__setitem__("model.extra.weight", torch.ones(3)))
    with pytest.raises(ckpt.CheckpointError, match="model.extra.weight"):
        openm1.from_pretrained(folder)
    openm1.from_pretrained(folder, strict=False)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["layer_types"].__setitem__(0, "mamba"), "layer_types\\[0\\] = 'mamba'"),
        (lambda d: d.update(num_key_value_heads=3), "num_key_value_heads"),
        (lambda d: d.update(rotary_dim=1000), "rotary_dim"),
        (lambda d: d.pop("hidden_size"), "hidden_size"),
        (lambda d: (d.pop("layer_types"), d.pop("attn_type_list")), "layer_types nor attn_type_list"),
        (lambda d: d.update(model_type="llama"), "model_type 'llama'"),
    ],
)
def test_bad_config_is_named(saved, change, message):
    folder, _ = saved
    cfg = json.loads((folder / "config.json").read_text())
    change(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=message):
        ModelConfig.load(folder)


def test_config_roundtrip_through_both_dialects():
    config = openm1.preset("minimax-m1")
    assert ModelConfig.from_dict(config.to_dict()) == config
    original = {
        k: v for k, v in config.to_dict().items() if k not in ("layer_types", "rope_parameters", "model_type")
    }
    original |= {"model_type": "minimax_text_01", "rope_theta": config.rope_theta}
    for ours, theirs in [
        ("linear_attn", "linear_attention"),
        ("full_attn", "full_attention"),
        ("mlp", "mlp"),
    ]:
        original[f"layernorm_{theirs}_alpha"] = original.pop(f"{ours}_alpha_factor")
        original[f"layernorm_{theirs}_beta"] = original.pop(f"{ours}_beta_factor")
    assert ModelConfig.from_dict(original) == config
