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


def test_provision_sets_the_low_balance_and_the_companys_texts(tmp_path):
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"OK_LOW": ["请充值", "Top up soon"]}, ensure_ascii=False))
    out = tmp_path / "c.json"
    proc = run("--out", str(out), "--low-balance", "3.5", "--messages", str(texts), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = fwconfig.validate(json.loads(out.read_text()))
    assert cfg["low_balance_fen"] == 350 and cfg["messages"]["OK_LOW"][1] == "Top up soon"


def test_provision_refuses_bad_settings_and_writes_nothing(tmp_path):
    out = tmp_path / "c.json"
    texts = tmp_path / "texts.json"
    for extra, why in (
        (("--low-balance", "5,00"), "want yuan such as 5 or 5.00"),
        (("--low-balance", "5.005"), "want yuan"),
        (("--low-balance", "2000"), "0 to 100000"),
        (("--messages", str(tmp_path / "none.json")), "--messages"),
        (("--messages", str(texts)), "unknown reason 'PAID'"),
    ):
        texts.write_text(json.dumps({"PAID": ["扣款成功", "Paid"]}, ensure_ascii=False))
        proc = run("--out", str(out), *extra, cwd=tmp_path)
        assert proc.returncode != 0 and why in proc.stderr, (extra, proc.stderr)
        assert not out.exists()
