"""The time scenarios of issue 16 on the simulated bench (tools/scenarios/time-*.toml,
docs/time.md): the RTC chip that lost power with no coverage for an hour (both cold-start
policies), a network ten years off, and resets (a good chip, a drifting one, watchdog and orderly
resets that keep the time, a missing chip, a reader that fails at a start and comes back). Each
scenario writes its own expectations; these tests add what the report shows."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(name, tmp_path):
    out = tmp_path / name
    proc = subprocess.run(
        [sys.executable, "-m", "tools.simbench", "--scenario"]
        + [str(ROOT / "tools" / "scenarios" / (name + ".toml")), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = (
        json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["failures"] == []
    return proc, report


def test_lost_power_sells_flagged_on_the_last_known_time_then_corrects(tmp_path):
    proc, report = run("time-lost-power", tmp_path)
    assert report["outcomes"] == {"OK": 4}
    assert "clock: last_known (untrusted)" in proc.stdout
    assert "clock: backoffice" in proc.stdout


def test_lost_power_with_the_refuse_policy_sells_nothing_until_the_time_is_known(tmp_path):
    proc, report = run("time-refuse", tmp_path)
    assert report["outcomes"] == {"NO_TIME": 2, "OK": 2}
    assert "Clock not set" in proc.stdout


def test_a_network_ten_years_off_moves_nothing(tmp_path):
    proc, report = run("time-network-off", tmp_path)
    assert report["outcomes"] == {"OK": 2}
    assert "票价 1.00元" in proc.stdout  # early-bird fares: the clock stayed in 2026


@pytest.mark.parametrize("name", ["time-resets"])
def test_resets_keep_the_time_and_parts_come_back(name, tmp_path):
    proc, report = run(name, tmp_path)
    assert report["outcomes"] == {"OK": 4}
    assert report["watchdog_resets"] == 1  # the hang
    assert proc.stdout.count("clock: kept") == 2
