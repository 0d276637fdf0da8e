"""Puzzle families: deterministic with a seed, verifiers accept the answer and reject perturbed ones."""

from __future__ import annotations

import pytest

from openm1.rewards.logic import FAMILIES, MAX_DIFFICULTY, LogicReward, extract_answer, generate


def perturb(answer: str) -> list[str]:
    """Plausible wrong answers: off by one, a swapped or changed letter, the other yes/no."""
    flips = {"yes": "no", "no": "yes", "even": "odd", "odd": "even"}
    if answer in flips:
        return [flips[answer]]
    parts = answer.split()
    if all(p.lstrip("-").isdigit() for p in parts):
        out = [" ".join(parts[:-1] + [str(int(parts[-1]) + 1)])]
        if len(set(parts)) > 1:
            out.append(" ".join(reversed(parts)))  # right numbers, wrong order
        return out
    changed = answer[:-1] + ("a" if answer[-1] != "a" else "b")
    return [changed, answer + "x"]


def test_at_least_six_families():
    assert len(FAMILIES) >= 6


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("difficulty", [1, 3, MAX_DIFFICULTY])
def test_generator_is_deterministic_and_verifier_is_exact(name, difficulty):
    fam = FAMILIES[name]
    for seed in range(20):
        a, b = fam.generate(seed, difficulty), fam.generate(seed, difficulty)
        assert a == b and a.prompt == b.prompt
        assert fam.verify(a, a.answer), (a.prompt, a.answer)
        for wrong in perturb(a.answer):
            assert not fam.verify(a, wrong), (a.prompt, a.answer, wrong)
    prompts = {fam.generate(seed, difficulty).prompt for seed in range(20)}
    assert len(prompts) > 5  # seeds give different puzzles


def test_difficulty_grows_the_input():
    for name in ("sorting", "reversal", "parity", "counting", "variables"):
        easy, hard = generate(name, 0, 1), generate(name, 0, MAX_DIFFICULTY)
        assert len(hard.prompt) > len(easy.prompt)


def test_variables_follow_the_chain_of_names():
    from openm1.rewards.logic.puzzles import Puzzle

    data = {"defs": {"c": "5", "a": "b", "e": "2", "b": "c"}, "query": "a"}
    p = Puzzle("variables", 2, 0, "Given c=5, a=b, e=2, b=c. What is a?", "5", data)
    fam = FAMILIES["variables"]
    assert fam.verify(p, "5") and fam.verify(p, "a = 5")
    assert not fam.verify(p, "2") and not fam.verify(p, "b") and not fam.verify(p, "c")
    for seed in range(50):  # the chain has `difficulty` hops and ends in a digit
        q = generate("variables", seed, 3)
        name, hops = q.data["query"], 0
        while not q.data["defs"][name].isdigit():
            name, hops = q.data["defs"][name], hops + 1
        assert hops == 3 and q.answer == q.data["defs"][name]


def test_verifiers_accept_harmless_formatting():
    p = generate("sorting", 5, 3)
    assert FAMILIES["sorting"].verify(p, "[" + ", ".join(p.answer.split()) + "]")
    q = generate("linear_equation", 5, 3)
    assert FAMILIES["linear_equation"].verify(q, f"x = {q.answer}")
    r = generate("reversal", 5, 3)
    assert FAMILIES["reversal"].verify(r, f"'{r.answer.upper()}'")


def test_logic_reward_right_wrong_malformed():
    p = generate("arithmetic", 7, 2)
    reward = LogicReward()
    assert reward(p.prompt, f"<think>compute</think>Answer: {p.answer}", p).score == 1.0
    assert reward(p.prompt, f"\\boxed{{{p.answer}}}", p).score == 1.0
    assert reward(p.prompt, f"Answer: {int(p.answer) + 1}", p).score == 0.0
    out = reward(p.prompt, "I think it is big", p)
    assert out.score == 0.0 and "no answer" in out.details["reason"]
    # the answer inside the reasoning does not count
    assert reward(p.prompt, f"<think>Answer: {p.answer}</think>", p).score == 0.0
    as_dict = {"family": p.family, "data": p.data}
    assert reward(p.prompt, f"Answer: {p.answer}", as_dict).score == 1.0


def test_extract_answer_priority():
    assert extract_answer("Answer: 1 <answer>2</answer>") == "2"
    assert extract_answer("Answer: 1 then \\boxed{3}") == "3"
    assert extract_answer("answer: yes\nAnswer: no") == "no"
    assert extract_answer("nothing") is None


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: generate("sudoku", 0), "unknown puzzle family 'sudoku'; valid: sorting"),
        (lambda: generate("parity", 0, 0), r"difficulty must be an integer in \[1, 10\]"),
        (lambda: generate("parity", 0, 11), "difficulty"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
