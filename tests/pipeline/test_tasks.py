import pytest

from openm1.generate import ByteTokenizer
from openm1.pipeline.data import stage_data
from openm1.pipeline.tasks import TRACES, Splits, build_splits, check_disjoint, question, solution
from openm1.rewards.logic import LogicReward, extract_answer, generate


@pytest.mark.parametrize("fam", sorted(TRACES))
def test_every_worked_solution_passes_the_family_verifier(fam):
    reward = LogicReward()
    for seed in range(60):
        for difficulty in (1, 3):
            p = generate(fam, seed, difficulty)
            text = solution(p)
            assert text.startswith("<think>") and "</think>\nAnswer: " in text
            assert extract_answer(text) == p.answer
            assert reward(question(p), text, p).score == 1.0, (fam, text)
            # a wrong final answer is caught by the verifier, whatever the trace says
            wrong = text.rsplit("Answer: ", 1)[0] + "Answer: zz9"
            assert reward(question(p), wrong, p).score == 0.0


def test_splits_are_disjoint_in_prompt_text_and_sized():
    s = build_splits(["arithmetic", "counting"], 1, n_eval=50, n_rl=200, n_sft=400, n_pretrain=400)
    assert s.sizes() == {"pretrain": 400, "sft": 400, "rl": 200, "eval": 50}
    ev, rl = {question(p) for p in s.eval}, {question(p) for p in s.rl}
    sft, pre = {question(p) for p in s.sft}, {question(p) for p in s.pretrain}
    assert not ev & rl and not ev & sft and not ev & pre and not rl & sft and not rl & pre
    assert {p.family for p in s.eval} == {"arithmetic", "counting"}


def test_overlap_is_detected_and_small_puzzle_spaces_are_refused():
    s = build_splits(["counting"], 1, n_eval=5, n_rl=5, n_sft=5, n_pretrain=5)
    with pytest.raises(ValueError, match="eval prompts also occur in the sft"):
        check_disjoint(Splits(s.pretrain, s.sft + [s.eval[0]], s.rl, s.eval))
    with pytest.raises(ValueError, match="distinct"):
        build_splits(["parity"], 1, n_eval=5, n_rl=5, n_sft=5, n_pretrain=5)  # only 8 parity puzzles exist
    with pytest.raises(ValueError, match="unsupported"):
        build_splits(["chess"], 1, n_eval=1, n_rl=1, n_sft=1, n_pretrain=1)


def test_sft_examples_train_on_the_response_only_in_the_rollout_format():
    tok = ByteTokenizer(512)
    s = build_splits(["arithmetic"], 1, n_eval=2, n_rl=2, n_sft=3, n_pretrain=3)
    data = stage_data(s, tok)
    ex = data.sft[0]
    prompt = tok.chat_prompt([{"role": "user", "content": question(s.sft[0])}])
    assert list(ex.tokens[: len(prompt)]) == prompt and not any(ex.target[: len(prompt)])
    assert all(ex.target[len(prompt) :]) and ex.tokens[-1] == tok.eos_token_ids[0]
    assert tok.decode(list(ex.tokens[len(prompt) : -1])) == solution(s.sft[0])
    assert [t.prompt for t in data.rl] == [question(p) for p in s.rl]
    assert data.eval_rows[0].reference["family"] == "arithmetic"
