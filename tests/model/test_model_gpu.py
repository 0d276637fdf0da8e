"""On CUDA the model's lightning layers run the Triton kernels (training, prefill, decode); they must
compute what the CPU reference path computes."""

from __future__ import annotations

import pytest
import torch

from openm1.config import preset
from openm1.model import MiniMaxM1ForCausalLM
from tests.model.helpers import random_config, rel_err

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("seed", [0, 3])
def test_gpu_forward_and_decode_match_cpu_reference(seed):
    config = random_config(seed, rotary_full=False, head_dim=32)
    cpu = MiniMaxM1ForCausalLM(config).eval()
    gpu = MiniMaxM1ForCausalLM(config).cuda().eval()
    gpu.load_state_dict(cpu.state_dict())
    ids = torch.randint(0, config.vocab_size, (2, 3 * config.block_size + 5))
    with torch.no_grad():
        expected = cpu(ids).logits
        assert rel_err(gpu(ids.cuda()).logits.cpu(), expected) < 1e-4
        cache = gpu.new_cache()
        parts = [gpu(ids[:, :-4].cuda(), cache=cache).logits]
        for t in range(ids.shape[1] - 4, ids.shape[1]):
            parts.append(gpu(ids[:, t : t + 1].cuda(), cache=cache).logits)
    assert rel_err(torch.cat(parts, 1).cpu(), expected) < 1e-4


def test_gpu_bf16_training_step_matches_cpu_gradients():
    config = preset("tiny").replace(head_dim=32)
    cpu = MiniMaxM1ForCausalLM(config)
    gpu = MiniMaxM1ForCausalLM(config).cuda()
    gpu.load_state_dict(cpu.state_dict())
    ids = torch.randint(0, config.vocab_size, (2, 100))

    def loss(model, x):
        logits = model(x).logits
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())

    loss(cpu, ids).backward()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu_loss = loss(gpu, ids.cuda())
    gpu_loss.backward()
    qkv = "model.layers.0.self_attn.qkv_proj.weight"
    g_cpu = dict(cpu.named_parameters())[qkv].grad
    g_gpu = dict(gpu.named_parameters())[qkv].grad.cpu()
    assert rel_err(g_gpu, g_cpu) < 5e-2


def test_gpu_bf16_packed_documents_match_separate_float64_forwards(monkeypatch):
    """Packed training on a GPU: the softmax layers take flash varlen over the documents."""
    monkeypatch.setenv("OPENM1_LIGHTNING_BACKEND", "torch")  # tiny head dims; the kernels test themselves
    config = random_config(6, rotary_full=False, head_dim=32)
    reference = MiniMaxM1ForCausalLM(config).double().eval()
    gpu = MiniMaxM1ForCausalLM(config).to("cuda", torch.bfloat16).eval()
    gpu.load_state_dict(reference.state_dict())
    lengths = [5, config.block_size + 3, 1, 40]
    docs = [torch.randint(0, config.vocab_size, (n,)) for n in lengths]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    logits = gpu(torch.cat(docs)[None].cuda(), cu_seqlens=cu.cuda()).logits[0]
    logits.float().square().mean().backward()  # the packed backward runs through flash varlen too
    assert all(torch.isfinite(p.grad).all() for p in gpu.parameters() if p.grad is not None)
    packed = logits.detach().float().cpu()
    assert torch.isfinite(packed).all()
    with torch.no_grad():
        for i, d in enumerate(docs):
            alone = reference(d[None]).logits[0]
            assert rel_err(packed[cu[i] : cu[i + 1]], alone) < 3e-2, f"document {i}"
