"""The simulated bench end to end: the default morning, a long day of random power cuts on the
RC522 and a Quectel modem, and a small smoke run. Each is the real firmware (compiled to .mpy,
under the MicroPython unix port) against the simulators and a real collector; the bench itself
checks that every card debit reached the back office exactly once, that the device journal and
the back office hold the same records, and every expectation the scenario writes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_scenario(name, tmp_path):
    out = tmp_path / name
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.simbench",
            "--scenario",
            str(ROOT / "tools" / "scenarios" / (name + ".toml")),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = (
        json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    )
    return proc, report, out


def test_smoke_scenario(tmp_path):
    proc, report, out = run_scenario("smoke", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["outcomes"] == {"OK": 1, "ALREADY_PAID": 1, "INSUFFICIENT": 1}
    assert report["revenue_fen"] == 200
    assert report["device_records"] == report["backoffice_records"]
    assert "扣款成功 | Paid | 票价 2.00元 | 余额 48.00元" in proc.stdout
    assert len(list((out / "frames").glob("*.png"))) == 3


def test_default_morning_scenario(tmp_path):
    proc, report, _ = run_scenario("morning", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["failures"] == []
    assert report["watchdog_resets"] == 1
    assert report["firmware_starts"] == 4  # power on, two power cuts, one watchdog reset
    assert report["card_debits"] > 8
    assert report["tac_checked"] == report["card_debits"]
    for reason in ("OK", "ALREADY_PAID", "BLACKLISTED", "NOT_TUNION", "NO_ISO_DEP", "TAP_AGAIN"):
        assert reason in report["outcomes"], reason


@pytest.mark.parametrize("scenario", ["power-cuts"])
def test_random_power_cuts_lose_and_double_nothing(scenario, tmp_path):
    proc, report, _ = run_scenario(scenario, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["firmware_starts"] >= 9  # eight power cuts
    assert report["device_records"] == report["backoffice_records"]
    assert report["tac_checked"] == report["card_debits"]


def test_a_broken_scenario_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[validator]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.simbench", "--scenario", str(bad), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "needs [validator] and [cards]" in proc.stderr
