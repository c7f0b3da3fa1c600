"""tools.device_backup and `make flash`: nothing is erased before the board's data is saved.

A stand-in `mpremote` (a small script) plays the board: `exec` of the backup's copy snippet
writes the txlog partition's copy into the stand-in's file system, `fs cp` and `fs rm` work on it.
`make flash` is run for real against a port that does not exist: the backup fails and esptool
never runs.
"""

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools import device_backup

ROOT = Path(__file__).resolve().parents[2]
TXLOG_BYTES = 64 * 4096

FAKE = textwrap.dedent(
    """\
    #!{python}
    import os, shutil, sys
    dev = os.environ["FAKE_DEVICE"]
    mode = os.environ.get("FAKE_MODE", "ok")
    args = sys.argv[1:]
    assert args[:3] == ["connect", args[1], "resume"], args
    if args[1] != "/dev/fake0":
        sys.exit("failed to access " + args[1])
    cmd = args[3:]
    def local(p):
        return os.path.join(dev, p.lstrip(":").lstrip("/"))
    if cmd[0] == "exec":
        if mode == "no_txlog":
            print("BACKUP-NO-TXLOG")
        else:
            with open(local("/txlog-backup.img"), "wb") as f:
                f.write(b"\\xff" * ({size} - (4096 if mode == "short" else 0)))
            print("BACKUP-TXLOG", {size})
    elif cmd[:2] == ["fs", "cp"] and cmd[2] == "-r":
        shutil.copytree(local(cmd[3]), os.path.join(cmd[4], os.path.basename(cmd[3])))
    elif cmd[:2] == ["fs", "cp"]:
        if not os.path.exists(local(cmd[2])):
            sys.exit("cp: " + cmd[2] + ": No such file")
        shutil.copy(local(cmd[2]), cmd[3])
    elif cmd[:2] == ["fs", "rm"]:
        os.remove(local(cmd[2]))
    else:
        sys.exit("unexpected " + repr(cmd))
    """
).format(python=sys.executable, size=TXLOG_BYTES)


@pytest.fixture
def board(tmp_path, monkeypatch):
    dev = tmp_path / "device"
    (dev / "data" / "params").mkdir(parents=True)
    (dev / "config.json").write_text('{"device_id": 7, "secret": "00"}')
    (dev / "data" / "params" / "state").write_bytes(b"\x01")
    fake = tmp_path / "mpremote"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    monkeypatch.setenv("FAKE_DEVICE", str(dev))
    monkeypatch.setattr(device_backup, "mpremote_bin", lambda: str(fake))
    return dev


def test_backup_saves_log_config_and_data_privately(board, tmp_path, capsys):
    out = tmp_path / "copy"
    assert device_backup.main(["--port", "/dev/fake0", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert (out / "txlog.img").stat().st_size == TXLOG_BYTES
    assert (out / "config.json").read_text().startswith('{"device_id": 7')
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o600  # the upload secret
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert (out / "data" / "params" / "state").read_bytes() == b"\x01"
    assert not (board / "txlog-backup.img").exists(), "the board's temporary copy is removed"
    assert "records: 0, 0 not yet acknowledged" in said
    assert "holds the upload secret" in said


@pytest.mark.parametrize(
    "mode,port,words",
    [
        ("no_txlog", "/dev/fake0", "no txlog partition"),
        ("short", "/dev/fake0", "copy again"),
        ("ok", "/dev/nothing-here", "failed to access"),
    ],
)
def test_a_failed_backup_says_why_and_fails(
    board, tmp_path, capsys, monkeypatch, mode, port, words
):
    monkeypatch.setenv("FAKE_MODE", mode)
    assert device_backup.main(["--port", port, "--out", str(tmp_path / "copy")]) == 1
    err = capsys.readouterr().err
    assert "backup FAILED" in err and words in err
    assert "nothing on the board was changed" in err


def test_make_flash_erases_nothing_when_the_backup_fails(tmp_path):
    # A real make run: the backup cannot reach the port, so esptool must never start.
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x00" * 16)
    proc = subprocess.run(
        ["make", "-s", "flash", "PORT=/dev/no-such-port-here", "FIRMWARE=%s" % firmware],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ERASES" in out and "backup failed, nothing erased" in out
    assert "FORCE=1" in out
    assert "esptool" not in out.lower().replace("esptool --chip", "")  # never invoked
    assert "Connecting" not in out


def test_make_flash_without_firmware_says_what_to_give():
    proc = subprocess.run(
        ["make", "-s", "flash", "PORT=/dev/no-such-port-here"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, FIRMWARE=""),
    )
    assert proc.returncode != 0 and "give FIRMWARE=" in proc.stdout + proc.stderr
