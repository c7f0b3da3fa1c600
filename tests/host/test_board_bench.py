"""tools.board_bench and `make board-bench`: refuses without a test card, the mpremote command,
the medians written to bench/board-results.json, and a real run end to end: the compiled
tapbench.py and selftest.py imported by the MicroPython unix port on the simulation board (a
stand-in mpremote) against a bench hub with a virtual T-Union card that gets the test fares.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.mpy_plugin import micropython_bin, micropython_path
from tools import board_bench

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
    if "FAKE_OUTPUT" in os.environ:
        print(os.environ["FAKE_OUTPUT"])
        sys.exit(0)
    dev = os.environ["FAKE_DEVICE"]
    env = dict(os.environ, MICROPYPATH="." + ":" + os.environ["FAKE_MICROPYPATH"])
    steps, cur = [], []
    for a in args[2:]:
        if a == "+":
            steps.append(cur)
            cur = []
        else:
            cur.append(a)
    steps.append(cur)
    for step in steps:
        if step == ["resume"]:
            continue
        if step[0] == "resume":
            step = step[1:]
        if step[:2] == ["fs", "cp"]:
            dest = os.path.join(dev, step[-1].lstrip(":"))
            for src in step[2:-1]:
                shutil.copy(src, dest)  # a file name, or a folder ending in /
        elif step[0] == "exec":
            cmd = [os.environ["FAKE_MICROPYTHON"], "-X", "heapsize=2m", "-c", step[1]]
            rc = subprocess.run(cmd, env=env, cwd=dev).returncode
            if rc:
                sys.exit(rc)
        else:
            sys.exit("unexpected " + repr(step))
    """
).format(python=sys.executable)

RAW = {
    "n": 3,
    "fare": 1,
    "reasons": ["OK", "OK", "OK"],
    "activation_us": [30000, 10000, 20000],
    "tap_us": [200000, 100000, 150000],
    "result_shown_us": [5000, 5000, 5000],
    "card_us": {"A4": [9000, 11000, 10000], "54": [40000, 42000, 41000]},
    "psam_us": {"70": [15000, 16000, 17000]},
    "log_append_us": [100, 300, 200, 400],
    "log_flash": {"partition": "txlog", "first_sector": 61, "sectors": 3},
    "flash_erase_us": [40000, 50000, 45000],
    "decide_us": [900, 1100, 1000],
    "decide_verdicts": ["fare 200", "fare 200", "fare 100"],
}


@pytest.fixture
def fake(tmp_path, monkeypatch):
    exe = tmp_path / "mpremote"
    exe.write_text(FAKE)
    exe.chmod(0o755)
    log = tmp_path / "args.jsonl"
    dev = tmp_path / "device"
    dev.mkdir()
    monkeypatch.setenv("FAKE_ARGS", str(log))
    monkeypatch.setenv("FAKE_DEVICE", str(dev))
    monkeypatch.setenv("MPREMOTE", str(exe))

    def sent():
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    return dev, sent


def test_it_refuses_to_debit_a_card_not_said_to_be_a_test_card(fake, tmp_path, capsys):
    _dev, sent = fake
    assert board_bench.main(["--port", "/dev/fake0", "--out", str(tmp_path / "r.json")]) == 2
    assert "DEBITS the card" in capsys.readouterr().err
    assert sent() == [] and not (tmp_path / "r.json").exists()


def test_medians_go_to_the_results_file(fake, tmp_path, monkeypatch):
    _dev, sent = fake
    cpu = {"tap_cpu_us": 812.5, "tap_alloc_bytes": 0}
    monkeypatch.setenv(
        "FAKE_OUTPUT", "INFO x\n@@BENCH %s\nBENCH %s" % (json.dumps(RAW), json.dumps(cpu))
    )
    out = tmp_path / "r.json"
    assert (
        board_bench.main(["--port", "/dev/fake0", "--test-card", "--n", "3", "--out", str(out)])
        == 0
    )
    got = json.loads(out.read_text())
    assert got["taps"] == 3 and got["reasons"] == ["OK"]
    assert got["card_ms"] == {"54": 41.0, "A4": 10.0}
    assert got["psam_ms"] == {"70": 16.0}
    assert got["activation_ms"] == 20.0 and got["tap_ms"] == 150.0
    assert got["total_ms"] == 175.0  # the median tap's activation + tap + result shown
    assert got["log_append_ms"] == 0.25
    assert got["log_flash"] == RAW["log_flash"] and got["flash_erase_ms"] == 45.0
    assert got["decide_ms"] == 1.0 and got["decide_verdicts"] == ["fare 100", "fare 200"]
    assert got["cpu"] == {"tap_cpu_us": 812.5, "tap_alloc_bytes": 0}
    cmd, cpu_cmd = sent()
    assert cpu_cmd[:3] == ["connect", "/dev/fake0", "exec"], "a fresh session: no resume"
    assert ":benchcpu/" in cpu_cmd and any(a.endswith("bench_mpy/tap.py") for a in cpu_cmd)
    assert cmd[:3] == ["connect", "/dev/fake0", "resume"]
    copied = [cmd[i + 3] for i, a in enumerate(cmd) if a == "fs"]
    assert copied == [":selftest.mpy", ":flashwin.mpy", ":tapbench.mpy"]
    assert cmd[-2] == "exec" and "tapbench.main(3, 1, " in cmd[-1]


def test_a_board_error_is_reported_with_exit_1(fake, tmp_path, monkeypatch, capsys):
    raw = dict(RAW, error="no card on the reader at tap 3")
    raw.update(activation_us=[1, 2], tap_us=[3, 4], result_shown_us=[5, 6], reasons=["OK"] * 2)
    monkeypatch.setenv("FAKE_OUTPUT", "@@BENCH " + json.dumps(raw))
    out = tmp_path / "r.json"
    args = ["--port", "/dev/fake0", "--test-card", "--no-cpu", "--out", str(out)]
    assert board_bench.main(args) == 1
    assert "no card on the reader at tap 3" in capsys.readouterr().err
    assert json.loads(out.read_text())["taps"] == 2, "what was measured is kept"


def test_make_board_bench_needs_test_card(fake):
    _dev, sent = fake
    proc = subprocess.run(
        ["make", "-s", "board-bench", "PORT=/dev/fake0"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "TEST_CARD=1" in proc.stderr
    assert sent() == []


def test_real_taps_on_the_simulation_board_end_to_end(fake, tmp_path, monkeypatch):
    from tools.sim.bench_hub import BenchWorld
    from tools.sim.card import VirtualCard

    dev, _sent = fake
    world = BenchWorld(start=849300000)
    card = VirtualCard.from_profile("tunion_plain")
    world.place(card)
    port = world.hub.start_in_thread(0)
    try:
        monkeypatch.setenv("SIM_PORT", str(port))
        monkeypatch.setenv("FAKE_MICROPYTHON", micropython_bin())
        monkeypatch.setenv("FAKE_MICROPYPATH", micropython_path("unix_sim"))
        monkeypatch.setenv("VALIDATOR_CONFIG", "/nonexistent/config.json")
        out = tmp_path / "r.json"
        args = ["--port", "/dev/fake0", "--test-card", "--n", "2", "--out", str(out)]
        assert board_bench.main(args) == 0
    finally:
        world.hub.stop()
    got = json.loads(out.read_text())
    assert got["taps"] == 2 and got["reasons"] == ["OK"], got
    assert {"A4", "50", "54"} <= set(got["card_ms"]) and "70" in got["psam_ms"]
    assert len(card.debits) == 2, "two test fares sold"
    # The unix port has no esp32.Partition: a RAM log, and why; no application, no decision.
    assert got["log_flash"]["skipped"].startswith("no esp32.Partition"), got["log_flash"]
    assert got["decide_ms"] is None and got["decide_skipped"], got
    assert got["cpu"]["tap_cpu_us"] > 0, got["cpu"]
    assert sorted(os.listdir(dev)) == [], "the board's copies are removed"
    shutil.rmtree(dev)
