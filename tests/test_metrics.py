"""MetricsWriter: JSONL lines, TensorBoard scalars read back with TensorBoard's own reader, resume
truncation, and the PNG plot."""

from __future__ import annotations

import json
import math

import pytest
import torch

from openm1.metrics import MetricsWriter, plot_metrics, read_metrics


def test_jsonl_records_and_non_numeric_values(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        w.log(0, {"loss": torch.tensor(1.5), "note": "hello", "nan": float("nan"), "flag": True})
        w.log(1, {"loss": 0.5, "nested": {"a": 1}})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["step"] == 0 and first["loss"] == 1.5 and first["note"] == "hello"
    assert math.isnan(first["nan"]) and first["flag"] is True
    assert read_metrics(tmp_path)[1] == {"step": 1, "loss": 0.5, "nested": {"a": 1}}


def test_bad_step_is_refused(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as w, pytest.raises(ValueError, match="step"):
        w.log(-1, {"x": 1.0})


def test_fresh_run_replaces_the_log_and_resume_drops_later_steps(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        for s in range(5):
            w.log(s, {"x": float(s)})
    with MetricsWriter(tmp_path, tensorboard=False, resume_step=2) as w:
        w.log(3, {"x": 30.0})
    assert [(r["step"], r["x"]) for r in read_metrics(tmp_path)] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0)]
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        w.log(0, {"x": 9.0})
    assert read_metrics(tmp_path) == [{"step": 0, "x": 9.0}]


def test_tensorboard_scalars_are_readable(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsWriter(tmp_path, tensorboard=True) as w:
        assert w.tensorboard_enabled
        for s in range(3):
            w.log(s, {"reward/mean": 0.25 * s, "text": "skip me", "bad": float("inf")})
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert acc.Tags()["scalars"] == ["reward/mean"]
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == [(0, 0.0), (1, 0.25), (2, 0.5)]


def test_plot_writes_a_png_and_skips_missing_keys(tmp_path):
    pytest.importorskip("matplotlib")
    records = [{"step": s, "reward": s / 10, "len": 5 + s} for s in range(12)]
    out = plot_metrics(records, ["reward", "len", "absent"], tmp_path / "plots" / "rl.png", smooth=3)
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "plots").iterdir() if p.name.startswith(".")]  # no temp left
    assert plot_metrics(records, ["absent"], tmp_path / "none.png") is None
