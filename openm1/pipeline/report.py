"""The report folder of a pipeline run: ``summary.json``, ``report.md``, ``samples.md`` and PNG plots
(pretraining and SFT loss, RL reward / accuracy / response length / clipped fraction, held-out accuracy
per stage)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from openm1.config import atomic_write_text
from openm1.metrics import plot_metrics, read_metrics, save_figure

RL_KEYS = ("reward/mean", "accuracy", "response_length/mean", "clip_frac")


def write_report(out: Path, summary: dict[str, Any], stages: dict[str, dict[str, Any]]) -> None:
    plots = out / "plots"
    made = []
    loss_records = []
    for stage in ("pretrain", "sft"):
        for r in read_metrics(out / stage):
            if "loss" in r:
                loss_records.append({"step": r["step"], f"{stage} loss": r["loss"]})
    if loss_records and plot_metrics(
        loss_records, ["pretrain loss", "sft loss"], plots / "loss.png", smooth=5
    ):
        made.append("loss.png")
    rl_records = read_metrics(out / "rl")
    if rl_records and plot_metrics(
        rl_records, RL_KEYS, plots / "rl.png", smooth=5, title="CISPO RL (training batches)"
    ):
        made.append("rl.png")
    if _accuracy_plot(stages, plots / "accuracy.png"):
        made.append("accuracy.png")
    summary["plots"] = [f"plots/{m}" for m in made]
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "report.md", _markdown(summary))
    atomic_write_text(out / "samples.md", _samples(stages))


def _markdown(s: dict[str, Any]) -> str:
    t, m = s["task"], s["model"]
    lines = [
        "# openm1 pipeline report",
        "",
        f"{s['date']} on {s['device']} ({s['machine']}); wall time {s['wall_s']:.0f} s.",
        "",
        f"Model: preset `{m['preset']}` {m['overrides'] or ''} with {m['parameters']:,} parameters "
        f"({m['active_parameters']:,} active per token); layers: "
        + ", ".join("softmax" if x == "full_attention" else "lightning" for x in m["layers"])
        + ".",
        "",
        f"Task: logic puzzles {', '.join(t['families'])} at difficulty {t['difficulty']}; "
        f"{s['data']['pretrain']} pretraining documents, {s['data']['sft']} SFT pairs, {s['data']['rl']} RL "
        f"prompts, {s['data']['eval']} held-out prompts (disjoint from all training data).",
        "",
        "| stage | held-out accuracy (pass@1, sampled) | greedy accuracy | most common answer (share) "
        "| train time (s) | tokens/s |",
        "|---|---|---|---|---|---|",
    ]
    for st in s["stages"]:
        greedy = st.get("greedy_accuracy")
        greedy_text = "" if greedy is None else f"{100 * greedy:.1f}%"
        top = st.get("top_answer")
        top_text = "" if top is None else f"`{top}` ({100 * st['top_answer_share']:.0f}%)"
        lines.append(
            f"| {st['stage']} | {100 * st['accuracy']:.1f}% | {greedy_text} | {top_text} | "
            f"{st['time_s']:.0f} | {st['tokens_per_s']:,.0f} |"
        )
    if "rl_gain_points" in s:
        lines += [
            "",
            f"RL changed held-out accuracy by **{s['rl_gain_points']:+.1f} points** over the SFT model.",
        ]
    constant = max((st.get("constant_answer_accuracy", 0.0) for st in s["stages"]), default=0.0)
    if constant:
        lines += [
            "",
            f"Giving one fixed answer to every held-out prompt would score at most {100 * constant:.1f}% "
            "(the best of the answers the model gave): accuracy near that with one answer dominating "
            "means the model learned the answer prior, not the procedure.",
        ]
    lines += ["", "Per family (sampled pass@1):", ""]
    fams = sorted({f for st in s["stages"] for f in st.get("by_family", {})})
    lines.append("| stage | " + " | ".join(fams) + " |")
    lines.append("|---|" + "---|" * len(fams))
    for st in s["stages"]:
        bf = st.get("by_family", {})
        lines.append(f"| {st['stage']} | " + " | ".join(f"{100 * bf.get(f, 0):.1f}%" for f in fams) + " |")
    lines += [""] + [f"![{Path(p).stem}]({p})" for p in s.get("plots", [])]
    lines += ["", "Sample answers: [samples.md](samples.md). Numbers: [summary.json](summary.json).", ""]
    return "\n".join(lines)


def _samples(stages: dict[str, dict[str, Any]]) -> str:
    out = ["# Sample answers on held-out prompts", ""]
    for stage, res in stages.items():
        out += [f"## after {stage}", ""]
        for item in res.get("samples", []):
            mark = "correct" if item["correct"] else "wrong"
            out += [f"**Prompt:** {item['prompt']}", "", "```", item["answer"], "```", f"({mark})", ""]
    return "\n".join(out)


def _accuracy_plot(stages: dict[str, dict[str, Any]], path: Path) -> bool:
    if not stages:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("plots need matplotlib: pip install 'openm1[plot]'", stacklevel=2)
        return False
    names = list(stages)
    sampled = [100 * stages[n]["accuracy"] for n in names]
    greedy = [100 * stages[n].get("greedy_accuracy", 0.0) for n in names]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], sampled, width=0.4, label="pass@1 (sampled)")
    ax.bar([x + 0.2 for x in xs], greedy, width=0.4, label="greedy")
    for x, v in zip(xs, sampled, strict=True):
        ax.text(x - 0.2, v + 1, f"{v:.0f}", ha="center", fontsize=8)
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("Held-out accuracy after each stage")
    fig.tight_layout()
    save_figure(fig, path)
    return True
