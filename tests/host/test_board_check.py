"""tools.board_check and `make board-check`: the mpremote command, the table, the exit status.

A stand-in `mpremote` (a small script) records its arguments and plays the board: canned
self-test output for the parsing cases, or, in mode "sim", the real tools/board/selftest.py run
by the MicroPython unix port on the simulation board (boards/unix_sim) against a bench hub this
test starts (tools/sim/bench_hub.BenchWorld): the whole path a bench run takes, without a board.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.mpy_plugin import micropython_bin, micropython_path
from tools import board_check

ROOT = Path(__file__).resolve().parents[2]

FAKE = textwrap.dedent(
    """\
    #!{python}
    import json, os, shutil, subprocess, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_ARGS"], "a") as f:
        f.write(json.dumps(args) + "\\n")
    if args[1] != "/dev/fake0":
        sys.exit("failed to access " + args[1])
    mode = os.environ.get("FAKE_MODE", "ok")
    if mode == "sim":  # the board: a folder, the unix port with the firmware on its path
        env = dict(os.environ, MICROPYPATH="." + ":" + os.environ["FAKE_MICROPYPATH"])
        dev = os.environ["FAKE_DEVICE"]
        if args[3] == "run":
            cmd = [os.environ["FAKE_MICROPYTHON"], args[4]]
        else:
            assert args[3:5] == ["fs", "cp"] and args[6] == ":selftest.mpy", args
            shutil.copy(args[5], os.path.join(dev, "selftest.mpy"))
            assert args[7:9] == ["+", "exec"], args
            cmd = [os.environ["FAKE_MICROPYTHON"], "-c", args[9]]
        sys.exit(subprocess.run(cmd, env=env, cwd=dev).returncode)
    print(os.environ["FAKE_OUTPUT"])
    """
).format(python=sys.executable)

HEALTHY = "\n".join(
    [
        "@@CHECK OK|micropython|v1.27.0 2025-12-09 esp32|",
        "@@CHECK OK|reader|PN532 firmware 1.6, support 07|",
        "INFO pn532: PN532 firmware 1.6 support 07",
        "@@CHECK WARN|card|no card on the reader|place a T-Union card for the probe",
        "@@DONE 0",
    ]
)
BROKEN = "\n".join(
    [
        "@@CHECK OK|micropython|v1.27.0 2025-12-09 esp32|",
        "@@CHECK FAIL|psam.atr|no ATR: LinkTimeout: ATR|PSAM seated, CLK and RST pins",
        "@@DONE 1",
    ]
)
CRASHED = "\n".join(
    [
        "@@CHECK OK|micropython|v1.27.0 2025-12-09 esp32|",
        "Traceback (most recent call last):",
        "MemoryError: memory allocation failed",
    ]
)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    exe = tmp_path / "mpremote"
    exe.write_text(FAKE)
    exe.chmod(0o755)
    log = tmp_path / "args.jsonl"
    monkeypatch.setenv("FAKE_ARGS", str(log))
    monkeypatch.setattr(board_check, "mpremote_bin", lambda: str(exe))

    def sent():
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    return exe, sent


def test_a_healthy_board_prints_the_table_and_exits_0(fake, monkeypatch, capsys):
    exe, sent = fake
    monkeypatch.setenv("FAKE_OUTPUT", HEALTHY)
    assert board_check.main(["--port", "/dev/fake0"]) == 0
    out = capsys.readouterr().out
    (cmd,) = sent()
    assert cmd[:7] == ["connect", "/dev/fake0", "resume", "fs", "cp", cmd[5], ":selftest.mpy"]
    assert cmd[5].endswith("/selftest.mpy") and not os.path.exists(cmd[5]), "a temporary copy"
    assert cmd[7:] == ["+", "exec", board_check._IMPORT]
    assert "OK    reader       PN532 firmware 1.6, support 07" in out
    assert "WARN  card         no card on the reader" in out
    assert "-> check: place a T-Union card for the probe" in out
    assert "INFO pn532" not in out, "log lines stay out of the table"
    assert out.rstrip().endswith("board-check passed: 2 OK, 1 WARN, 0 FAIL, 0 SKIP")


def test_a_failed_check_exits_1_with_what_to_check(fake, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_OUTPUT", BROKEN)
    assert board_check.main(["--port", "/dev/fake0"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  psam.atr" in out and "-> check: PSAM seated, CLK and RST pins" in out
    assert "board-check FAILED: 1 OK, 0 WARN, 1 FAIL, 0 SKIP" in out


def test_a_self_test_that_stops_early_exits_2_and_shows_the_board_output(
    fake, monkeypatch, capsys
):
    monkeypatch.setenv("FAKE_OUTPUT", CRASHED)
    assert board_check.main(["--port", "/dev/fake0"]) == 2
    out = capsys.readouterr().out
    assert "MemoryError: memory allocation failed" in out
    assert "board-check INCOMPLETE" in out


def test_no_board_on_the_port_exits_2(fake, capsys):
    assert board_check.main(["--port", "/dev/nothing"]) == 2
    assert "failed to access /dev/nothing" in capsys.readouterr().err


def test_without_mpy_cross_the_source_is_run(fake, monkeypatch, capsys):
    exe, sent = fake
    monkeypatch.setattr(board_check, "mpy_cross_bin", lambda: None)
    monkeypatch.setenv("FAKE_OUTPUT", HEALTHY)
    assert board_check.main(["--port", "/dev/fake0"]) == 0
    assert sent() == [["connect", "/dev/fake0", "resume", "run", str(board_check.SELFTEST)]]


def test_parse_keeps_a_bar_free_line_and_ignores_unknown_status():
    rows, done, other = board_check.parse("@@CHECK OK|heap|1 bytes\n@@CHECK MAYBE|x|y|z\n")
    assert rows == [("OK", "heap", "1 bytes", "")]
    assert done is None and other == ["@@CHECK MAYBE|x|y|z"]


def test_make_board_check_sends_the_self_test_to_the_port(fake, tmp_path):
    exe, sent = fake
    env = dict(os.environ, FAKE_OUTPUT=HEALTHY, MPREMOTE=str(exe))
    proc = subprocess.run(
        ["make", "-s", "board-check", "PORT=/dev/fake0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (cmd,) = sent()
    assert cmd[:3] == ["connect", "/dev/fake0", "resume"] and ":selftest.mpy" in cmd
    assert "board-check passed" in proc.stdout


@pytest.fixture
def bench(monkeypatch, tmp_path):
    from tools.sim.bench_hub import BenchWorld

    def start(**kw):
        world = BenchWorld(start=849300000, **kw)
        port = world.hub.start_in_thread(0)
        monkeypatch.setenv("SIM_PORT", str(port))
        monkeypatch.setenv("FAKE_MODE", "sim")
        monkeypatch.setenv("FAKE_MICROPYTHON", micropython_bin())
        monkeypatch.setenv("FAKE_MICROPYPATH", micropython_path("unix_sim"))
        monkeypatch.setenv("VALIDATOR_CONFIG", "/nonexistent/config.json")
        dev = tmp_path / "device"
        dev.mkdir(exist_ok=True)
        monkeypatch.setenv("FAKE_DEVICE", str(dev))
        started.append(world)
        return world

    started = []
    yield start
    for world in started:
        world.hub.stop()


def test_the_self_test_runs_on_the_simulation_board_end_to_end(fake, bench, tmp_path, capsys):
    bench()
    assert board_check.main(["--port", "/dev/fake0", "--timeout", "200"]) == 0
    out = capsys.readouterr().out
    for name in ("reader", "psam.atr", "psam.terminal", "rtc", "modem", "display", "feedback"):
        assert any(ln.startswith("OK    %s " % name) for ln in out.splitlines()), (name, out)
    assert "000000000101" in out, "the PSAM's terminal number"
    assert "board-check passed" in out
    assert not (tmp_path / "device" / "selftest.mpy").exists(), "the board's copy is removed"


def test_the_source_runs_end_to_end_too(fake, bench, monkeypatch, capsys):
    bench()
    monkeypatch.setattr(board_check, "mpy_cross_bin", lambda: None)
    assert board_check.main(["--port", "/dev/fake0", "--timeout", "200"]) == 0
    assert "board-check passed" in capsys.readouterr().out


def test_a_board_without_its_rtc_chip_fails_the_check_and_says_what_to_check(fake, bench, capsys):
    bench(rtc_chip=None)
    assert board_check.main(["--port", "/dev/fake0", "--timeout", "200"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  rtc" in out and "ds3231 does not answer" in out
    assert "-> check: RTC on the display's I2C bus" in out
    assert "OK    psam.terminal" in out, "the other checks still ran"
