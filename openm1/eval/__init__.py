"""The evaluation harness: benchmark JSONL files (math, multiple choice, code, logic), pass@k."""

from openm1.eval.bench import TYPES, BenchRow, MultipleChoiceReward, load_bench, parse_row, reward_for
from openm1.eval.harness import EvalResult, EvalSettings, evaluate, format_table, pass_at_k

__all__ = [
    "TYPES",
    "BenchRow",
    "EvalResult",
    "EvalSettings",
    "MultipleChoiceReward",
    "evaluate",
    "format_table",
    "load_bench",
    "parse_row",
    "pass_at_k",
    "reward_for",
]
