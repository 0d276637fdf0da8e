import json

import pytest
import torch
import torch.nn.functional as F

from openm1.train import Example, PackedLoader, TrainConfig, Trainer, pack, packed_loss
from openm1.train.state import latest_checkpoint
from tests.train.helpers import documents, pattern_documents, small_model


def quiet(**kw) -> TrainConfig:
    base = dict(lr=3e-3, min_lr=3e-4, warmup_steps=0, progress=False, aux_coef_start=0.01, aux_coef_end=0.001)
    return TrainConfig(**(base | kw))


@torch.no_grad()
def test_packed_loss_equals_the_sum_of_per_document_losses():
    model = small_model().eval()
    docs = documents(5, seed=1, lo=3, hi=30)
    ce, _ = packed_loss(model, pack(docs))
    alone = 0.0
    for d in docs:
        ids = torch.tensor([d.tokens])
        logits = model(ids).logits[0, :-1]
        alone += float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
    assert float(ce) == pytest.approx(alone, rel=1e-5)
    # and it is not what the same tokens give when attention crosses documents
    ids = pack(docs).input_ids
    crossing = F.cross_entropy(model(ids).logits[0], pack(docs).labels[0], ignore_index=-100, reduction="sum")
    assert abs(float(crossing) - alone) > 1e-3


@torch.no_grad()
def test_sft_loss_is_on_the_response_only():
    model = small_model().eval()
    prompt, response = [3, 4, 5, 6, 7], [10, 11, 12]
    ce, _ = packed_loss(model, pack([Example.prompt_response(prompt, response)]))
    ids = torch.tensor([prompt + response])
    logits = model(ids).logits[0]
    want = F.cross_entropy(logits[len(prompt) - 1 : -1], torch.tensor(response), reduction="sum")
    assert ce.item() == pytest.approx(want.item(), rel=1e-6)
    # with the whole sequence as a document the loss differs: the prompt would be trained too
    ce_all, _ = packed_loss(model, pack([Example.document(prompt + response)]))
    assert float(ce_all) > float(ce) + 1e-3


def test_loss_decreases_on_a_tiny_model(tmp_path):
    model = small_model()
    trainer = Trainer(model, pattern_documents(64), quiet(steps=40, seq_len=64, decay_start=0.5), tmp_path)
    history = trainer.train()
    first = sum(h["loss"] for h in history[:5]) / 5
    last = sum(h["loss"] for h in history[-5:]) / 5
    assert last < 0.6 * first
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 41))
    assert {"loss", "lr", "aux_coef", "grad_norm", "tokens_per_s"} <= set(lines[0])
    assert lines[0]["aux_coef"] > lines[-1]["aux_coef"]
    assert (tmp_path / "final" / "config.json").is_file() and (tmp_path / "loss.png").is_file()
    assert any((tmp_path / "tensorboard").iterdir())


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    docs = [Example.document([(7 * i + j) % 48 for j in range(8)]) for i in range(8)]
    # accumulation: 2 rows of 16 tokens (2 documents each); big batch: 1 row of 32 (4 documents)
    grads = []
    for accum, seq_len in ((2, 16), (1, 32)):
        model = small_model()
        cfg = quiet(steps=1, grad_accum=accum, seq_len=seq_len, aux_coef_start=0.0, aux_coef_end=0.0)
        trainer = Trainer(model, docs, cfg, tmp_path / str(accum))
        loader = PackedLoader(docs, seed=cfg.seed)
        rows = [loader.next_row(seq_len) for _ in range(accum)]
        trainer.accumulate(rows, coef=0.0)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_resume_equals_the_uninterrupted_run(tmp_path):
    docs = documents(40, seed=2)
    cfg = quiet(steps=6, seq_len=[[0, 32], [3, 48]], save_every=3, decay_start=0.3, plot=False)
    straight = small_model()
    Trainer(straight, docs, cfg, tmp_path / "a").train()

    first = small_model()
    t = Trainer(first, docs, cfg, tmp_path / "b")
    for _ in range(3):
        t.train_step()
    t.save()
    torch.manual_seed(123)  # a fresh process: nothing but the checkpoint carries over
    resumed = small_model(seed=99)
    t2 = Trainer(resumed, docs, cfg, tmp_path / "b")
    history = t2.train(resume=True)
    assert [h["step"] for h in history] == [4, 5, 6]
    assert [h["seq_len"] for h in history] == [48, 48, 48]
    for (n, p), q in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 5, 6]


def test_a_checkpoint_cut_short_leaves_the_previous_one_latest(tmp_path):
    docs = documents(10)
    t = Trainer(small_model(), docs, quiet(steps=4, seq_len=32), tmp_path)
    t.train_step()
    good = t.save()
    (tmp_path / "checkpoints" / ".step-000002.tmp-x").mkdir()  # a writer killed mid-way
    assert latest_checkpoint(tmp_path / "checkpoints") == good
    resumed = Trainer(small_model(seed=5), docs, quiet(steps=4, seq_len=32), tmp_path)
    assert resumed.resume() and resumed.step == 1


def test_activation_checkpointing_gives_the_same_gradients(tmp_path):
    docs = documents(6, seed=4)
    grads = []
    for ckpt in (False, True):
        model = small_model()
        t = Trainer(
            model, docs, quiet(steps=1, seq_len=64, activation_checkpointing=ckpt), tmp_path / str(ckpt)
        )
        t.accumulate([pack(docs)], coef=0.01)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_seq_len_beyond_the_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_position_embeddings"):
        Trainer(small_model(), documents(4), quiet(seq_len=4096), tmp_path)
