"""Training metrics for every trainer: one JSON line per step, TensorBoard scalars, and PNG plots.

``MetricsWriter(out_dir)`` appends ``{"step": n, ...}`` to ``out_dir/metrics.jsonl`` (flushed per line,
so a crash loses nothing already logged) and mirrors every numeric value to TensorBoard under
``out_dir/tensorboard`` (when the ``tensorboard`` package is installed; JSONL alone otherwise).
On resume from a checkpoint at step ``s``, ``MetricsWriter(out_dir, resume_step=s)`` first drops the
lines past ``s`` (written after the checkpoint, and about to be written again) so the log has each step
once. ``plot_metrics(records, keys, path)`` draws one panel per key into a PNG.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsWriter:
    """Per-step metrics to ``metrics.jsonl`` and TensorBoard.

    ``tensorboard``: True requires the package, False skips it, None (default) uses it when installed.
    Values that are not finite numbers (strings, lists, NaN) go to the JSONL only.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        tensorboard: bool | None = None,
        resume_step: int | None = None,
        jsonl_name: str = JSONL_NAME,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / jsonl_name
        if resume_step is None:
            if self.path.exists():
                self.path.unlink()  # a fresh run starts a fresh log
        else:
            _truncate_after(self.path, resume_step)
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = _summary_writer(self.out_dir / TENSORBOARD_DIR, tensorboard, resume_step)

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Write one step's metrics; returns the record as written (with ``step``)."""
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items() if k != "step"}}
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and _is_scalar(value):
                    self._tb.add_scalar(key, float(value), step)
            self._tb.flush()
        return record

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    @property
    def tensorboard_enabled(self) -> bool:
        return self._tb is not None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (or of the folder holding one); unreadable lines are skipped
    (a line cut short by a crash)."""
    path = Path(path)
    if path.is_dir():
        path = path / JSONL_NAME
    records = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            records.append(item)
    return records


def plot_metrics(
    records: Sequence[Mapping[str, Any]],
    keys: Iterable[str],
    path: str | os.PathLike,
    *,
    x: str = "step",
    title: str | None = None,
    smooth: int = 1,
) -> Path | None:
    """One panel per key (values against ``x``) saved as a PNG, atomically; keys with no numeric values
    are left out. ``smooth`` > 1 overlays a trailing moving average. Returns the path, or None when
    nothing could be plotted or matplotlib is missing (with a warning naming the extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("plots need matplotlib: pip install 'openm1[plot]'", stacklevel=2)
        return None
    series = {}
    for key in keys:
        pts = [(r[x], r[key]) for r in records if x in r and _is_scalar(r.get(key))]
        if pts:
            series[key] = pts
    if not series:
        return None
    n = len(series)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (key, pts) in zip(axes.flat, series.items(), strict=False):
        xs, ys = zip(*pts, strict=True)
        marker = "o" if len(xs) <= 30 else None  # sparse series (evaluations) stay visible
        ax.plot(xs, ys, lw=1.0, alpha=0.5 if smooth > 1 else 1.0, marker=marker, markersize=3)
        if smooth > 1 and len(ys) > 1:
            avg = [
                sum(ys[max(0, i - smooth + 1) : i + 1]) / len(ys[max(0, i - smooth + 1) : i + 1])
                for i in range(len(ys))
            ]
            ax.plot(xs, avg, lw=1.6)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure to ``path`` atomically (a temporary file, then a rename) and close it."""
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------- helpers
def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a 0-d tensor or numpy scalar
        value = value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _truncate_after(path: Path, step: int) -> None:
    """Keep only the records with ``step <= step`` (atomically)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and isinstance(item.get("step"), int) and item["step"] <= step:
            kept.append(line)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def _summary_writer(folder: Path, wanted: bool | None, resume_step: int | None):  # noqa: ANN202
    if wanted is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        if wanted:
            raise ImportError("TensorBoard logging needs tensorboard: pip install 'openm1[train]'") from e
        return None
    # purge_step hides events past the checkpoint that a resumed run writes again
    return SummaryWriter(str(folder), purge_step=None if resume_step is None else resume_step + 1)
