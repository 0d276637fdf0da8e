"""The ``info`` and ``flops`` verbs through ``openm1.cli.main``: JSON shape, plots, configs, bad input."""

from __future__ import annotations

import json
import warnings

import pytest

from openm1.analysis.params import count_params
from openm1.cli import main
from openm1.config import preset

PNG = b"\x89PNG\r\n\x1a\n"


def _json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_info_json_minimax_m1(capsys):
    out = _json(capsys, ["info", "--preset", "minimax-m1", "--context", "1M", "--dtype", "bf16", "--json"])
    assert set(out) >= {"source", "layers", "params", "memory", "paper"}
    assert out["params"]["total"] == pytest.approx(456e9, rel=0.01)
    assert out["params"]["active"] == pytest.approx(45.9e9, rel=0.01)
    assert out["memory"]["softmax_kv_bytes"] == 40 * 1024**3
    assert out["memory"]["lightning_state_bytes"] == 280 * 1024**2
    assert out["memory"]["pure_softmax_kv_bytes"] == 320 * 1024**3
    assert out["layers"] == {"total": 80, "lightning": 70, "softmax": 10}


def test_info_human(capsys):
    assert main(["info", "--preset", "minimax-m1"]) == 0
    text = capsys.readouterr().out
    for word in ("experts", "total", "active", "40.00 GiB", "280.00 MiB", "320.00 GiB", "45.9B"):
        assert word in text


def test_info_from_saved_config(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny rotates part of the head; save() warns about transformers
        preset("tiny").save(tmp_path)
    out = _json(capsys, ["info", "--config", str(tmp_path), "--context", "128K", "--json"])
    assert out["params"] == count_params(preset("tiny")).to_dict()
    assert out["memory"]["context"] == 128 * 1024
    assert out["source"].startswith("config:")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "--preset", "nonesuch"], "unknown preset 'nonesuch'"),
        (["info", "--config", "/nonexistent/folder"], "no config.json"),
        (["info", "--context", "lots"], "token count"),
        (["info", "--dtype", "fp12"], "unknown dtype"),
        (["flops", "--convention", "flash"], "unknown convention"),
        (["flops", "--lengths", "1K,x"], "token count"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.startswith(f"openm1 {argv[0]}: error:")


def test_flops_json(capsys):
    out = _json(capsys, ["flops", "--lengths", "1K,64K,100K", "--json"])
    assert set(out) >= {"convention", "rows", "claims", "ratios_by_convention", "per_token", "plot"}
    assert [r["length"] for r in out["rows"]] == [1024, 65536, 102400]
    assert set(out["rows"][0]) == {"length", "m1_flops", "r1_flops", "ratio"}
    assert out["claims"]["ratio_64k"] < 0.5
    assert 0.2 <= out["claims"]["ratio_100k"] <= 0.3
    assert out["plot"] is None
    assert out["convention"]["name"] == "unabsorbed-square"


def test_flops_other_convention_and_plot(tmp_path, capsys):
    path = tmp_path / "flops.png"
    out = _json(
        capsys, ["flops", "--convention", "absorbed-causal", "--no-lm-head", "--plot", str(path), "--json"]
    )
    assert out["convention"] == {
        "name": "absorbed-causal",
        "mla": "absorbed",
        "span": "causal",
        "lm_head": False,
    }
    assert path.read_bytes()[:8] == PNG
    assert out["plot"] == str(path)


def test_flops_human(capsys):
    assert main(["flops"]) == 0
    text = capsys.readouterr().out
    assert "verdict" in text and "hold" in text
    assert "100K" in text and "64K" in text
