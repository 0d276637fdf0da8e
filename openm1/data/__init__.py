"""Data curation for RL sets: near-duplicate removal, decontamination, SFT/RL separation, MCQ rewriting.

Each verb of ``openm1 data`` is a function here over JSONL files (:mod:`openm1.data.dedup`,
:mod:`~openm1.data.decontaminate`, :mod:`~openm1.data.separate`, :mod:`~openm1.data.mcq`), built from
small parts: :mod:`~openm1.data.jsonl_io` (streaming rows, bad lines reported, atomic output),
:mod:`~openm1.data.keys` (``--key``), :mod:`~openm1.data.ngram` (normalisation, n-gram index),
:mod:`~openm1.data.minhash` (MinHash LSH) and :mod:`~openm1.data.embedding` (sentence embeddings).
The optional dependencies (``pip install 'openm1[data]'``) are imported where they are used.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency of the ``data`` extra is not installed."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(
            f"{what} needs the Python package {module!r}, which is not installed: pip install 'openm1[data]'"
        ) from e
