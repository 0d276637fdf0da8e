"""From task splits to what each stage consumes: packed-trainer examples, RL tasks, benchmark rows;
and the files a run leaves for inspection (``data/*.jsonl``; ``data/eval.jsonl`` is a benchmark file
that ``openm1 eval`` reads)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openm1.config import atomic_write_text
from openm1.eval import BenchRow
from openm1.pipeline.tasks import Splits, pretraining_text, question, solution, to_tasks
from openm1.rl.curriculum import Task
from openm1.train import Example


@dataclass
class StageData:
    pretrain: list[Example]
    sft: list[Example]
    rl: list[Task]
    eval_rows: list[BenchRow]


def chat_prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """The prompt exactly as the RL rollouts and the evaluation render it (one user message)."""
    return list(tokenizer.chat_prompt([{"role": "user", "content": text}]))


def stage_data(splits: Splits, tokenizer: Any) -> StageData:
    eos = list(tokenizer.eos_token_ids)[:1]
    pretrain = [Example.document(tokenizer.encode(pretraining_text(p))) for p in splits.pretrain]
    sft = [
        Example.prompt_response(chat_prompt_ids(tokenizer, question(p)), tokenizer.encode(solution(p)) + eos)
        for p in splits.sft
    ]
    rows = [
        BenchRow(f"eval-{i}", "logic", question(p), {"family": p.family, "data": p.data}, line=i + 1)
        for i, p in enumerate(splits.eval)
    ]
    return StageData(pretrain, sft, to_tasks(splits.rl), rows)


def write_data_files(splits: Splits, folder: Path) -> None:
    """``eval.jsonl`` (benchmark format, for ``openm1 eval``), ``rl.jsonl`` and ``eval-tasks.jsonl`` (task
    format, for ``openm1 rl`` / ``openm1 experiment`` with ``reward = "logic"``: what the verifier needs
    under ``answer``, the answer's text under ``answer_text``), ``sft.jsonl``, ``pretrain.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, items: list[dict[str, Any]]) -> None:
        atomic_write_text(folder / name, "".join(json.dumps(x) + "\n" for x in items))

    dump(
        "eval.jsonl",
        [{"type": "logic", "prompt": question(p), "family": p.family, "data": p.data} for p in splits.eval],
    )

    def tasks(puzzles: list[Any]) -> list[dict[str, Any]]:
        return [
            {
                "prompt": question(p),
                "family": p.family,
                "answer": {"family": p.family, "data": p.data},
                "answer_text": p.answer,
            }
            for p in puzzles
        ]

    dump("rl.jsonl", tasks(splits.rl))
    dump("eval-tasks.jsonl", tasks(splits.eval))
    dump("sft.jsonl", [{"prompt": question(p), "response": solution(p)} for p in splits.sft])
    dump("pretrain.jsonl", [{"text": pretraining_text(p)} for p in splits.pretrain])
