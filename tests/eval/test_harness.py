import itertools
import json

import pytest

from openm1.eval import BenchRow, EvalSettings, evaluate, load_bench, parse_row, pass_at_k
from openm1.eval.harness import grade
from openm1.rewards.logic import generate


def test_pass_at_k_matches_enumerating_every_subset():
    for n in range(1, 7):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(outcomes, k))
                want = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(want)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def _write(tmp_path, rows):
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_malformed_rows_are_reported_by_line_and_skipped(tmp_path, capsys):
    puzzle = generate("parity", 1, 2)
    path = _write(
        tmp_path,
        [
            {"type": "math", "prompt": "1+1?", "answer": "2"},
            "{not json",
            {"type": "math", "prompt": "no answer"},
            {"type": "essay", "prompt": "?"},
            {"type": "mcq", "prompt": "pick", "choices": ["x", "y"], "answer": "C"},
            {"type": "logic", "prompt": puzzle.prompt, "family": "parity", "data": puzzle.data},
            {"type": "code", "prompt": "echo", "tests": [{"input": "a", "output": "a"}]},
        ],
    )
    rows, bad = load_bench(path)
    assert [r.line for r in rows] == [1, 6, 7]
    assert [b["line"] for b in bad] == [2, 3, 4, 5]
    reasons = " ".join(b["reason"] for b in bad)
    assert "answer" in reasons and "essay" in reasons and "letter" in reasons
    assert f"{path}:3:" in capsys.readouterr().err


def test_each_row_type_is_checked_by_its_verifier():
    puzzle = generate("arithmetic", 5, 1)
    rows = [
        parse_row({"type": "math", "prompt": "half?", "answer": "\\frac{1}{2}"}, 1),
        parse_row({"type": "mcq", "prompt": "which?", "choices": ["red", "blue", "green"], "answer": 1}, 2),
        parse_row({"type": "code", "prompt": "double", "tests": "assert double(3) == 6"}, 3),
        parse_row({"type": "logic", "prompt": puzzle.prompt, "family": "arithmetic", "data": puzzle.data}, 4),
    ]
    assert "B. blue" in rows[1].prompt
    good = [
        "<think>so</think>The answer is \\boxed{0.5}",
        "Answer: B",
        "```python\ndef double(x):\n    return 2 * x\n```",
        f"<think>...</think>\nAnswer: {puzzle.answer}",
    ]
    wrong = [
        "\\boxed{2}",
        "Answer: C",
        "```python\ndef double(x):\n    return x\n```",
        f"Answer: {int(puzzle.answer) + 1}",
    ]
    # two samples per row: the right answer, then a wrong one
    texts = [t for pair in zip(good, wrong, strict=True) for t in pair]
    out, scores, by_type = grade(rows, texts, n=2, ks=(1, 2))
    assert [r["correct"] for r in out] == [1, 1, 1, 1]
    assert scores["pass@1"] == pytest.approx(0.5) and scores["pass@2"] == pytest.approx(1.0)
    assert set(by_type) == {"math", "mcq", "code", "logic"}
    _, scores, _ = grade(rows, [t for pair in zip(wrong, wrong, strict=True) for t in pair], n=2, ks=(1,))
    assert scores["pass@1"] == 0.0


def test_evaluate_runs_the_engine_with_n_samples():
    from openm1.config import preset
    from openm1.generate import ByteTokenizer
    from openm1.model import MiniMaxM1ForCausalLM

    cfg = preset("tiny")
    model, tok = MiniMaxM1ForCausalLM(cfg), ByteTokenizer(cfg.vocab_size)
    puzzle = generate("parity", 0, 1)
    rows = [BenchRow("a", "logic", puzzle.prompt, {"family": "parity", "data": puzzle.data})] * 2
    result = evaluate(model, tok, rows, EvalSettings(n=3, k=(1, 3), temperature=1.0, max_new_tokens=4))
    assert len(result.rows) == 2 and all(len(r["samples"]) == 3 for r in result.rows)
    assert all(1 <= s["tokens"] <= 4 for r in result.rows for s in r["samples"])
    assert 0.0 <= result.scores["pass@1"] <= result.scores["pass@3"] <= 1.0
    with pytest.raises(ValueError, match="temperature"):
        EvalSettings(n=2, temperature=0.0).validate()
    with pytest.raises(ValueError, match="pass@k"):
        EvalSettings(n=2, k=(4,), temperature=1.0).validate()
