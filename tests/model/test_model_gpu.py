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
