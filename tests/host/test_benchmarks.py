"""Smoke test of `make bench` (tools/benchmarks.py) with tiny counts: every figure key is there
and numeric, the report renders, and the robustness counters found nothing. Not a timing test."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_every_key_as_a_number(tmp_path):
    out_json = tmp_path / "results.json"
    out_md = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.benchmarks",
            "--quick",
            "--no-pg",
            "--no-callgrind",
            "--work",
            str(tmp_path / "work"),
            "--out-json",
            str(out_json),
            "--out-md",
            str(out_md),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out_json.read_text())
    from tools.benchmarks import KEYS

    figures = res["figures"]
    assert set(KEYS) <= set(figures)
    for key in KEYS:
        value = figures[key]
        if key == "collector_records_per_s_postgres":
            assert value is None  # skipped with --no-pg
            continue
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), key
    assert figures["card_apdus_per_tap"] == 5
    assert figures["psam_apdus_per_tap"] == 2
    assert figures["blacklist_blocks_per_lookup"] <= 2
    assert figures["power_cut_points_tested"] > 0 and figures["power_cut_losses"] == 0
    assert figures["tearing_points_tested"] > 0
    assert figures["tearing_double_charges"] == 0 and figures["tearing_lost_debits"] == 0
    assert res["quick"] is True
    text = out_md.read_text()
    assert "tap_model_ms_esp32" in text and "--quick" in text
