"""The CUDA-graph decode path: its sync-free MoE is the reference MoE, and graphed decoding gives the
tokens eager decoding gives (the latter on a GPU only)."""

from __future__ import annotations

import pytest
import torch

from openm1.generate import Engine, SamplingParams
from openm1.generate.graphs import dense_moe
from tests.generate.helpers import greedy_alone, random_prompts, tiny_model
from tests.model.helpers import rel_err

GREEDY = SamplingParams(max_new_tokens=10, temperature=0, repetition_window=None)


def test_dense_moe_equals_the_reference_moe():
    model = tiny_model(3).double()
    ids = torch.randint(0, model.config.vocab_size, (3, 9))
    with torch.no_grad():
        ref = model(ids).logits
        with dense_moe(model):
            dense = model(ids).logits
        after = model(ids).logits  # the swap is undone
    assert rel_err(dense, ref) < 1e-6 and torch.equal(after, ref)


def test_cuda_graph_flag_falls_back_on_cpu():
    model = tiny_model(1)
    prompts = random_prompts(model.config.vocab_size, [4], 1)
    with pytest.warns(UserWarning, match="CUDA"):
        engine = Engine(model, max_batch=2, max_len=32, cuda_graph=True)
    assert engine.generate(prompts, GREEDY)[0].token_ids == greedy_alone(model, prompts[0], 10)


@pytest.mark.gpu
def test_graphed_decode_equals_eager_with_rows_joining_and_leaving(monkeypatch):
    monkeypatch.setenv("OPENM1_LIGHTNING_BACKEND", "torch")  # tiny head dims; the kernels test themselves
    model = tiny_model(2).to("cuda")
    c = model.config
    prompts = random_prompts(c.vocab_size, [5, 17, 2, 9, 30], 2)
    params = [
        SamplingParams(max_new_tokens=n, temperature=0, repetition_window=None) for n in (3, 9, 5, 12, 4)
    ]
    eager = Engine(model, max_batch=3, max_len=64).generate(prompts, params)
    graphed_engine = Engine(model, max_batch=3, max_len=64, cuda_graph=True)
    assert graphed_engine._graph is not None
    graphed = graphed_engine.generate(prompts, params)
    assert [r.token_ids for r in graphed] == [r.token_ids for r in eager]
    assert graphed_engine.cache.lengths == [0, 0, 0] and graphed_engine.cache.lengths_t.tolist() == [0, 0, 0]
