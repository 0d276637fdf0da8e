import pytest
import torch

from openm1.train import ContextStages, Example, LinearSchedule, LRSchedule, PackedLoader, TrainConfig, pack
from openm1.train.packing import IGNORE


def test_lr_warmup_constant_then_decay_to_final():
    s = LRSchedule(8e-5, 8e-6, total_steps=100, warmup_steps=10, decay_start=50)
    assert s(0) == pytest.approx(8e-6)  # 1/10 of the way up
    assert s(9) == pytest.approx(8e-5)
    assert s(10) == s(49) == 8e-5
    assert 8e-6 < s(75) < 8e-5
    assert s(100) == pytest.approx(8e-6) and s(500) == pytest.approx(8e-6)
    lin = LRSchedule(1.0, 0.0, 10, decay_start=0, decay="linear")
    assert [round(lin(i), 6) for i in (0, 5, 10)] == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="decay"):
        LRSchedule(1.0, 0.1, 10, decay="step")


def test_aux_coefficient_decreases_and_context_grows_in_stages():
    aux = LinearSchedule(0.01, 0.001, 10)
    values = [aux(i) for i in range(12)]
    assert values[0] == 0.01 and values[-1] == pytest.approx(0.001)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    stages = ContextStages.of([[0, 64], [5, 128], [9, 256]])
    assert [stages(i) for i in (0, 4, 5, 8, 9, 100)] == [64, 64, 128, 128, 256, 256]
    with pytest.raises(ValueError, match="grow"):
        ContextStages.of([[0, 128], [5, 64]])
    with pytest.raises(ValueError, match="step 0"):
        ContextStages.of([[3, 64]])


def test_pack_keeps_labels_inside_each_document():
    a, b = Example.document([1, 2, 3]), Example.prompt_response([7, 8], [9, 10])
    batch = pack([a, b])
    assert batch.input_ids.tolist() == [[1, 2, 3, 7, 8, 9, 10]]
    # a's last token has no target (b's first token is another document); b's prompt is not trained.
    assert batch.labels.tolist() == [[2, 3, IGNORE, IGNORE, 9, 10, IGNORE]]
    assert batch.cu_seqlens.tolist() == [0, 3, 7]
    assert batch.num_targets == 4


def test_loader_cuts_long_documents_so_every_target_is_trained_once():
    long = Example.document(list(range(10)))
    loader = PackedLoader([long], shuffle=False)
    rows = [loader.next_row(4) for _ in range(3)]
    assert [r.input_ids.tolist()[0] for r in rows] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    targets = [t for r in rows for t in r.labels[0].tolist() if t != IGNORE]
    assert targets == list(range(1, 10))
    assert loader.next_row(4).input_ids.tolist()[0] == [0, 1, 2, 3]  # the next epoch
    assert loader.epoch == 1


def test_loader_state_resumes_the_same_rows():
    docs = [Example.document(list(range(i, i + 2 + i % 5))) for i in range(20)]
    a = PackedLoader(docs, seed=3)
    for _ in range(7):
        a.next_row(9)
    state = a.state_dict()
    want = [a.next_row(9).input_ids.tolist() for _ in range(10)]
    b = PackedLoader(docs, seed=3)
    b.load_state_dict(state)
    assert [b.next_row(9).input_ids.tolist() for _ in range(10)] == want
    with pytest.raises(ValueError, match="seed"):
        PackedLoader(docs, seed=4).load_state_dict(state)


def test_examples_and_config_reject_bad_input():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        Example.document([1])
    with pytest.raises(ValueError, match="non-empty response"):
        Example.prompt_response([1, 2], [])
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_dict({"stpes": 3})
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)
    with pytest.raises(ValueError, match="grad_accum"):
        TrainConfig(grad_accum=0)
    with pytest.raises(ValueError, match="seq_len"):
        TrainConfig(seq_len=[[0, 64], [2, 32]])
    assert TrainConfig().betas == (0.9, 0.95) and TrainConfig().eps == 1e-15
    assert torch.is_tensor(pack([Example.document([1, 2])]).cu_seqlens)
