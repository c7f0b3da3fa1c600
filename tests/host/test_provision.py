"""tools/provision.py writes a config the firmware accepts and refuses one it would not."""

import json
import subprocess
import sys
from pathlib import Path

import config as fwconfig

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--device", "7", "--route", "12", "--city", "2482",
    "--institution", "1200290000000000", "--collector", "http://127.0.0.1:8080",
]  # fmt: skip


def run(*extra, cwd):
    return subprocess.run(
        [sys.executable, "-m", "tools.provision", *ARGS, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_provision_writes_a_valid_config_with_a_fresh_secret(tmp_path):
    out = tmp_path / "c.json"
    proc = run("--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = fwconfig.validate(json.loads(out.read_text()))
    assert cfg["device_id"] == 7 and len(cfg["secret_bytes"]) == 32
    out2 = tmp_path / "d.json"
    run("--out", str(out2), cwd=tmp_path)
    assert json.loads(out2.read_text())["secret"] != cfg["secret"]


def test_provision_refuses_a_bad_city(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tools.provision", *ARGS[:6], "24", *ARGS[7:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "city" in proc.stderr
