"""Smoke test of `make bench` (tools/benchmarks.py) with tiny counts: every figure key is there
and numeric, the report renders, and the robustness counters found nothing. Not a timing test."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_every_key_as_a_number(tmp_path):
    from tools import build_micropython32 as b32

    try:  # every heap figure comes from micropython32: built here once, cached by its hash
        b32.build(quiet=True)
    except b32.Unavailable as e:
        pytest.skip("micropython32 not available: %s" % e)
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
        timeout=900,  # the real-driver heap runs talk to simulators over sockets
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
    assert figures["heap_runtime"] == "micropython32-frozen v1.27.0"
    for key in ("heap_min_heapsize_kb", "heap_live_max_bytes", "heap_largest_alloc_bytes"):
        assert isinstance(figures[key], int) and figures[key] > 0, (key, figures[key])
    assert res["details"]["app_params_version"] == 4, "the delta was fetched and activated"
    by_reader = figures["tap_model_ms_by_reader"]
    assert set(by_reader) == {"rc522_spi", "pn532_spi", "pn532_hsu", "pn532_i2c"}
    assert max(by_reader.values()) == figures["tap_model_ms_esp32"]
    assert figures["tap_model_cpu_ms_160"] > figures["tap_model_cpu_ms_240"] > 0
    assert res["quick"] is True
    text = out_md.read_text()
    assert "tap_model_ms_esp32" in text and "--quick" in text


def test_heap_map_comparison_finds_what_an_operation_allocated():
    from tools.benchmarks import largest_allocations, new_allocations, parse_heap_map

    before = parse_heap_map(["00000000: MDh=..S.........", "       (3 lines all free)"])
    after = parse_heap_map(["00000000: MDh=AhSh=====T..", "00000400: h==."])
    # blocks 4 (A), 5 (h), 7.. (h + 5 tails), 13 (T) and 64 (h + 2 tails) are new; 6 (S)
    # was there before
    assert new_allocations(before, after) == [
        (16, "A"),
        (16, "h"),
        (96, "h"),
        (16, "T"),
        (48, "h"),
    ]
    assert new_allocations(after, after) == []
    out = "\n".join(
        [
            "@@MAP0 upload",
            "GC memory layout; from 0x1:",
            "00000000: h=......",
            "@@MAPEND",
            "@@MAP1",
            "00000000: h=S=====",
            "@@MAPEND",
        ]
    )
    got = largest_allocations(out)
    assert got["upload"] == (96, "S") and got["tap"] == (0, "") and got["ops"] == 1


def test_verdict_table_checks_each_target_and_says_what_was_not_measured():
    from tools import bench_report

    figures = {
        "tap_model_ms_by_reader": {"rc522_spi": 149.9, "pn532_spi": 150.1},
        "tap_alloc_bytes": 512,
        "power_cut_points_tested": 4999,
        "power_cut_losses": 0,
    }
    got = {name: verdict for name, _v, _t, verdict in bench_report.verdicts(figures)}
    assert got["tap_model_ms_by_reader.rc522_spi"] == "met"
    assert got["tap_model_ms_by_reader.pn532_spi"] == "MISSED"
    assert got["tap_model_ms_by_reader.pn532_hsu"] == "not measured"
    assert got["tap_alloc_bytes"] == "met"  # the target itself is met
    assert got["power_cut_points_tested"] == "MISSED"
    assert got["power_cut_losses"] == "met"
    assert got["heap_live_max_bytes"] == "not measured"
