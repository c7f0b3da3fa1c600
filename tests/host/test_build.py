"""`make firmware BOARD=<name>` produces a loadable tree for every board."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOARDS = sorted(p.parent.name for p in (ROOT / "boards").glob("*/manifest.py"))


@pytest.mark.parametrize("board", BOARDS)
def test_firmware_build(board, tmp_path):
    out = tmp_path / board
    proc = subprocess.run(
        [sys.executable, "-m", "tools.build_firmware", "--board", board, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    mpys = list((out / "lib").glob("*.mpy"))
    assert len(mpys) >= 5
    for mpy in mpys:
        head = mpy.read_bytes()[:2]
        assert head == b"M\x06", f"{mpy.name}: not an .mpy v6 file"
    assert (out / "board.py").exists()


def test_unknown_board_is_refused(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tools.build_firmware", "--board", "nope", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "unknown board" in proc.stderr


def test_deploy_commands_are_the_documented_ones():
    proc = subprocess.run(
        ["make", "-n", "deploy", "BOARD=esp32_pn532_i2c", "PORT=/dev/ttyUSB0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mpremote connect /dev/ttyUSB0" in proc.stdout
