"""tools.board_test and `make board-test`: the mpremote commands sent, and the per-test report.

A stand-in `mpremote` plays the board: `fs cp` copies into a folder that is the board's file
system, `exec` runs the code there with the MicroPython unix port, the firmware on its path as a
deployed board has it in /lib (tests/mpy is not on it: what a test needs must be copied). So the
real _runner.py runs the real test files through the commands the tool sends.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.mpy_plugin import micropython_bin
from tools import board_test

ROOT = Path(__file__).resolve().parents[2]

FAKE = textwrap.dedent(
    """\
    #!{python}
    import json, os, shutil, subprocess, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_ARGS"], "a") as f:
        f.write(json.dumps(args) + "\\n")
    if args[:2] != ["connect", "/dev/fake0"]:
        sys.exit("failed to access " + args[1])
    dev = os.environ["FAKE_DEVICE"]
    steps, cur = [], []
    for a in args[2:]:
        if a == "+":
            steps.append(cur)
            cur = []
        else:
            cur.append(a)
    steps.append(cur)
    for step in steps:
        if step[0] == "exec":
            env = dict(os.environ, MICROPYPATH=os.environ["FAKE_MICROPYPATH"])
            cmd = [os.environ["FAKE_MICROPYTHON"], "-X", "heapsize=1m", "-c", step[1]]
            proc = subprocess.run(cmd, cwd=dev, env=env, capture_output=True, text=True)
            out = proc.stdout
            if os.environ.get("FAKE_MODE") == "reset" and "@@MPTEST" in out:
                cut = out.index("@@MPTEST", out.index("@@MPTEST") + 1)
                out = out[:cut] + "\\nets Jul 29 2019"
            sys.stdout.write(out)
        elif step[:2] == ["fs", "cp"]:
            dest = os.path.join(dev, step[-1].lstrip(":"))
            os.makedirs(dest, exist_ok=True)
            for src in step[2:-1]:
                shutil.copy(src, dest)
        else:
            sys.exit("unexpected " + repr(step))
    """
).format(python=sys.executable)

EXCLUDED = ("server=", "esp32_machine", "sim_", "getenv", "repo_root", "/tmp", "simlink")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    exe = tmp_path / "mpremote"
    exe.write_text(FAKE)
    exe.chmod(0o755)
    dev = tmp_path / "device"
    dev.mkdir()
    log = tmp_path / "args.jsonl"
    path = [ROOT / "firmware", ROOT / "drivers", ROOT / ".venv" / "mplib"]
    monkeypatch.setenv("FAKE_ARGS", str(log))
    monkeypatch.setenv("FAKE_DEVICE", str(dev))
    monkeypatch.setenv("FAKE_MICROPYTHON", micropython_bin())
    monkeypatch.setenv("FAKE_MICROPYPATH", ":".join(str(p) for p in path) + ":.frozen")
    monkeypatch.setenv("MPREMOTE", str(exe))

    def sent():
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    return dev, sent


@pytest.mark.parametrize("name", board_test.BOARD_TESTS)
def test_each_board_test_file_needs_no_simulator_stand_in_or_host_path(name):
    for h in [board_test.MPY_DIR / name] + board_test.helpers(board_test.MPY_DIR / name):
        text = h.read_text(encoding="utf-8")
        assert not [w for w in EXCLUDED if w in text], h.name
    assert board_test.test_names(board_test.MPY_DIR / name)


def test_the_command_for_one_file_copies_the_runner_the_file_and_its_helpers():
    cmd, names = board_test.file_command("/dev/ttyUSB0", "test_tunion.py")
    assert cmd[1:5] == ["connect", "/dev/ttyUSB0", "exec", board_test._MKDIR]
    i = cmd.index("cp")
    copied = [Path(p).name for p in cmd[i + 1 : cmd.index("+", i)]]
    assert copied[:3] == ["_runner.py", "mptest.py", "test_tunion.py"]
    assert "memlog.py" in copied, "its helper goes along"
    assert cmd[cmd.index("+", i) - 1] == ":mpytest/"
    assert cmd[-2] == "exec" and "mpytest/test_tunion.py" in cmd[-1]
    assert names[0] in cmd[-1] and names == board_test.test_names(
        board_test.MPY_DIR / "test_tunion.py"
    )


def test_two_files_run_through_the_stand_in_board_report_each_function(fake, capsys):
    dev, sent = fake
    code = board_test.main(
        ["--port", "/dev/fake0", "--file", "test_utils.py", "--file", "test_record.py"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    for f in ("test_utils.py", "test_record.py"):
        for name in board_test.test_names(board_test.MPY_DIR / f):
            assert "tests/mpy/%s::%s PASSED" % (f, name) in out
    n = len(board_test.test_names(board_test.MPY_DIR / "test_utils.py")) + len(
        board_test.test_names(board_test.MPY_DIR / "test_record.py")
    )
    assert out.rstrip().endswith("board-test on /dev/fake0: %d passed, 0 failed, 0 skipped" % n)
    calls = sent()
    assert len(calls) == 3, "one session per file, one to clean up"
    assert calls[-1] == ["connect", "/dev/fake0", "exec", board_test._CLEAN]
    assert not (dev / "mpytest").exists(), "mpytest/ removed from the board"


def test_failures_and_skips_are_reported_per_function(fake, tmp_path, monkeypatch, capsys):
    mpy = tmp_path / "mpy"
    mpy.mkdir()
    for f in ("_runner.py", "mptest.py"):
        (mpy / f).write_text((board_test.MPY_DIR / f).read_text())
    (mpy / "test_mixed.py").write_text(
        "import mptest\n\n\ndef test_ok():\n    pass\n\n\n"
        "def test_bad():\n    mptest.eq(1, 2, 'one is not two')\n\n\n"
        "def test_later():\n    mptest.skip('not on this board')\n"
    )
    monkeypatch.setattr(board_test, "MPY_DIR", mpy)
    monkeypatch.setattr(board_test, "HELPER_DIRS", (mpy,))
    assert board_test.main(["--port", "/dev/fake0", "--file", "test_mixed.py"]) == 1
    out = capsys.readouterr().out
    assert "tests/mpy/test_mixed.py::test_ok PASSED" in out
    assert "tests/mpy/test_mixed.py::test_bad FAILED" in out
    assert "tests/mpy/test_mixed.py::test_later SKIPPED" in out
    assert "one is not two" in out
    assert "1 passed, 1 failed, 1 skipped" in out


def test_a_board_that_resets_mid_file_fails_the_functions_it_never_reported(
    fake, monkeypatch, capsys
):
    monkeypatch.setenv("FAKE_MODE", "reset")
    assert board_test.main(["--port", "/dev/fake0", "--file", "test_record.py"]) == 1
    out = capsys.readouterr().out
    names = board_test.test_names(board_test.MPY_DIR / "test_record.py")
    assert "tests/mpy/test_record.py::%s PASSED" % names[0] in out
    assert "tests/mpy/test_record.py::%s FAILED" % names[1] in out
    assert "not reported (the board stopped or reset)" in out
    assert "ets Jul 29 2019" in out, "the board's last output is shown"


def test_no_board_exits_2(fake, capsys):
    assert board_test.main(["--port", "/dev/nothing", "--file", "test_utils.py"]) == 2
    assert "cannot reach /dev/nothing" in capsys.readouterr().err


def test_make_board_test_runs_the_files_given(fake):
    dev, sent = fake
    proc = subprocess.run(
        ["make", "-s", "board-test", "PORT=/dev/fake0", "FILES=test_utils.py"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = sent()
    assert calls[0][:2] == ["connect", "/dev/fake0"]
    assert any(a.endswith("tests/mpy/test_utils.py") for a in calls[0])
    assert "board-test on /dev/fake0: " in proc.stdout
