"""mcq-to-open: options in every common shape, the answer as text, and drops with their reasons."""

from __future__ import annotations

import pytest

from openm1.data.mcq import mcq_to_open, options_from_text, reformulate

from .helpers import read_jsonl, write_jsonl


@pytest.mark.parametrize(
    ("options", "answer"),
    [
        (["London", "Paris", "Rome"], 1),  # MMLU
        ({"text": ["London", "Paris", "Rome"], "label": ["A", "B", "C"]}, "B"),  # ARC
        ({"A": "London", "B": "Paris", "C": "Rome"}, "(b)"),
        ([{"label": "A", "text": "London"}, {"label": "B", "text": "Paris"}], "Answer: B"),
        (["A. London", "B. Paris", "C. Rome"], "B"),
        (["London", "Paris", "Rome"], "paris"),
    ],
)
def test_shapes(options, answer):
    r = reformulate("What is the capital of France?", options, answer)
    assert (r.question, r.answer, r.reason) == ("What is the capital of France?", "Paris", None)


@pytest.mark.parametrize(
    "question",
    [
        "What is 6 x 7?\nA. 36\nB) 42\n(C) 48\nD: 49",
        "What is 6 x 7? (A) 36 (B) 42 (C) 48 (D) 49",
    ],
)
def test_options_in_the_question_text(question):
    stem, opts = options_from_text(question)
    assert stem.strip() == "What is 6 x 7?"
    assert [t for _, t in opts] == ["36", "42", "48", "49"]
    r = reformulate(question, None, "B")
    assert (r.question, r.answer) == ("What is 6 x 7?", "42")


@pytest.mark.parametrize(
    ("question", "options", "answer", "reason"),
    [
        ("Which of the following is a prime number?", ["4", "6", "7"], 2, "refers_to_options"),
        ("Which one of these cities is in Italy?", ["Paris", "Rome"], 1, "refers_to_options"),
        ("Select the correct statement about gravity.", ["a", "b"], 0, "refers_to_options"),
        ("下列哪个是质数？", ["4", "7"], 1, "refers_to_options"),
        ("Which gases are noble?", ["Helium", "Neon", "All of the above"], 2, "answer_refers_to_options"),
        ("Which gases are noble?", ["Helium", "Neon", "Both A and B"], 2, "answer_refers_to_options"),
        ("Which gases are noble?", ["Helium", "Neon", "A and B"], 2, "answer_refers_to_options"),
        ("Water boils at 100 C at sea level.", ["True", "False"], 0, "binary_answer"),
        ("Is 7 prime?", ["Yes", "No"], "A", "binary_answer"),
        ("What is 2+2?", None, "A", "no_options"),
        ("What is 2+2?", ["4"], 0, "no_options"),
        ("What is 2+2?", ["3", "4"], "E", "answer_unresolved"),
        ("What is 2+2?", ["3", "4"], 7, "answer_unresolved"),
        ("What is 2+2?", ["4", "2*2", "5"], "A, B", "multiple_answers"),
        ("What is 2+2?", ["4", "2*2", "5"], ["A", "B"], "multiple_answers"),
        ("A. 3\nB. 4", None, "B", "empty_stem"),
    ],
)
def test_drops(question, options, answer, reason):
    r = reformulate(question, options, answer)
    assert r.reason == reason and r.question is None


def test_kept_questions_are_not_over_dropped():
    for q in (
        "Which planet is the largest in the solar system?",
        "Follow the steps: what is 3*4?",
        "What follows 7 in the Fibonacci sequence?",
    ):
        assert reformulate(q, ["x", "Jupiter"], 1).ok, q


def test_file(tmp_path):
    rows = [
        {
            "id": 1,
            "question": "What is the capital of France?",
            "choices": ["London", "Paris"],
            "answer": 1,
            "src": "x",
        },
        {"id": 2, "question": "Which of the following is even?", "choices": ["3", "4"], "answer": 1},
        {"id": 3, "question": "What is 6 x 7?\nA. 42\nB. 36", "answer": "A"},
        {"id": 4, "question": "No answer here", "choices": ["a", "b"]},
    ]
    path = write_jsonl(tmp_path / "mcq.jsonl", rows)
    out, rep = tmp_path / "open.jsonl", tmp_path / "rep.jsonl"
    s = mcq_to_open([str(path)], str(out), "question", options_field="choices", report=str(rep), log=None)
    got = read_jsonl(out)
    assert got[0] == {
        "id": 1,
        "question": "What is the capital of France?",
        "answer": "Paris",
        "src": "x",
        "mcq": {
            "question": "What is the capital of France?",
            "options": ["London", "Paris"],
            "answer": 1,
            "letter": "B",
        },
    }
    assert (got[1]["question"], got[1]["answer"]) == ("What is 6 x 7?", "42")
    assert (s.kept, s.dropped, s.problems["missing_field"]) == (2, 1, 1)
    drops = [r for r in read_jsonl(rep) if r["type"] == "drop"]
    assert [(d["row"]["line"], d["reason"]) for d in drops] == [(2, "refers_to_options")]
    with pytest.raises(ValueError, match="question field itself"):
        mcq_to_open([str(path)], str(out), "{question} {answer}", log=None)
