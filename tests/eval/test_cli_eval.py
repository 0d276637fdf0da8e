import json

from openm1.cli import main
from openm1.rewards.logic import generate


def test_openm1_eval_prints_scores_and_reports_bad_rows(tmp_path, capsys):
    p = generate("counting", 1, 1)
    bench = tmp_path / "b.jsonl"
    rows = [
        {"type": "logic", "prompt": p.prompt, "family": "counting", "data": p.data},
        {"type": "math", "prompt": "2+2?", "answer": "4"},
        {"type": "mcq", "prompt": "x?", "choices": ["a"], "answer": 0},
    ]
    bench.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "res.json"
    args = [
        "eval",
        "tiny",
        "--bench",
        str(bench),
        "-n",
        "2",
        "--max-new-tokens",
        "3",
        "--json",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    scores = json.loads(captured.out)["benchmarks"]["b.jsonl"]
    assert set(scores["scores"]) >= {"pass@1", "pass@2"} and scores["by_type"]["logic"]["problems"] == 1
    assert scores["malformed"] == [
        {"file": str(bench), "line": 3, "reason": scores["malformed"][0]["reason"]}
    ]
    assert f"{bench}:3:" in captured.err
    full = json.loads(out.read_text())["benchmarks"]["b.jsonl"]
    assert len(full["rows"]) == 2 and all(len(r["samples"]) == 2 for r in full["rows"])
