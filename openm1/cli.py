"""The ``openm1`` command line: one command, many verbs, each a thin layer over a library call.

Each verb lives in ``openm1/commands/<verb>.py`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

VERBS = ("info", "flops", "generate", "serve", "data", "plan", "rl", "eval", "run", "demo", "experiment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openm1", description="openm1: an open implementation of MiniMax-M1 (arXiv 2506.13585)."
    )
    parser.add_argument("--version", action="version", version=f"openm1 {_version()}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        importlib.import_module(f"openm1.commands.{verb}").register(sub)
    return parser


def _version() -> str:
    from openm1 import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Bad input: one clear line, no traceback (the library raises errors that say what to do).
        print(f"openm1 {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
