"""Time real taps on a board: `make board-bench PORT=/dev/ttyUSB0 TEST_CARD=1 [N=10] [FARE=1]`.

    python -m tools.board_bench --port /dev/ttyUSB0 --test-card [--n 10] [--fare 1]

Runs tools/board/tapbench.py on the board (compiled with selftest.py, whose part building it
uses, copied, imported, removed: as tools/board_check.py does): N sales of a test fare to the
TEST card on the reader with the TEST PSAM, every card and PSAM APDU timed by instruction byte.
It DEBITS the card, so it refuses to run without --test-card. The medians go to
bench/board-results.json under the tap model's terms (tools/bench_model.py: card_ms and psam_ms
per instruction byte, total_ms), each with what it includes:
- card_ms: at the reader, so RF, the reader's bus and the card's processing together (the model
  splits these: docs/tap-model.md);
- psam_ms: the PSAM link's exchange; 8070 runs while the card works (its wall time);
- log_append_ms: one append to the transaction log (firmware/txlog.py) on the board's flash,
  over wholly erased sectors of its txlog partition that are erased again afterwards
  (tools/board/flashwin.py; `log_flash` says where, or why not: then a RAM log's encoding only);
  flash_erase_ms: one sector erase (giving those sectors back);
- decide_ms: the application's decision with the board's own parameters, when the validator
  application is loaded (its verdicts in decide_verdicts; the sale is always the test fare);
- activation_ms: poll() with the card present; result_shown_ms: the display's outcome screen;
- total_ms: activation + tap + result shown (detection, half the idle poll period, is not in it).
With it, the CPU benchmark of tools/bench_mpy/tap.py (the firmware's purchase against in-process
fakes: `tap_cpu_us` etc. as `make bench` measures them on this machine) runs on the board in a
fresh session and goes under "cpu" (--no-cpu skips it; an error there is recorded, not fatal).
Exit status: 0 written, 1 the board reported an error, 2 no board or no result.
"""

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools import board_check

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "board" / "tapbench.py"
FLASHWIN = ROOT / "tools" / "board" / "flashwin.py"
OUT = ROOT / "bench" / "board-results.json"
MARK = "@@BENCH "


def compile_scripts(out_dir):
    exe = board_check.mpy_cross_bin()
    if not exe:
        raise board_check.CheckError("mpy-cross not found: run `make setup` first")
    made = []
    for src in (board_check.SELFTEST, FLASHWIN, SCRIPT):
        out = Path(out_dir) / (src.stem + ".mpy")
        proc = subprocess.run(
            [exe, "-s", src.name, "-o", str(out), str(src)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise board_check.CheckError("mpy-cross failed on %s: %s" % (src, proc.stderr))
        made.append(out)
    return made


def validator_now():
    """This machine's UTC clock as validator time (seconds since 2000-01-01 UTC): the card's
    validity dates are checked against it, whatever the board's own clock says."""
    return int(time.time()) - 946684800


def command(port, compiled, n, fare, now):
    cmd = [board_check.mpremote_bin(), "connect", port, "resume"]
    for f in compiled:
        cmd += ["fs", "cp", str(f), ":" + f.name, "+"]
    names = [f.name for f in compiled]
    code = (
        "import sys\n"
        "for _m in ('selftest', 'flashwin', 'tapbench'):\n"
        "    sys.modules.pop(_m, None)\n"
        "try:\n"
        "    import tapbench\n"
        "    tapbench.main(%d, %d, %d)\n"
        "finally:\n"
        "    import os\n"
        "    for _f in %r:\n"
        "        os.remove(_f)\n" % (n, fare, now, names)
    )
    return cmd + ["exec", code]


# The CPU benchmark of tools/bench_mpy/tap.py (firmware alone, in-process fakes), as the host's
# `make bench` runs it, with what it imports that a deployed board lacks.
CPU_DIR = "benchcpu"
CPU_FILES = (
    ROOT / "tools" / "bench_mpy" / "tap.py",
    ROOT / "tools" / "bench_mpy" / "benchlib.py",
    ROOT / "tools" / "bench_mpy" / "bench_fakes.py",
    ROOT / "tests" / "mpy" / "memlog.py",
    ROOT / "boards" / "unix_sim" / "rawflash.py",
)
CPU_TAPS = 50
CPU_REPS = 3


def cpu_command(port):
    """One session (mpremote's soft reset: a fresh heap, the application not started)."""
    mkdir = "import os\ntry:\n    os.mkdir(%r)\nexcept OSError:\n    pass\n" % CPU_DIR
    run = (
        "import sys, os\n"
        "del sys.argv[:]\n"
        "sys.argv.extend(['tap', '%d', '%d'])\n"
        "sys.path.insert(0, %r)\n"
        "try:\n"
        "    exec(open(%r).read())\n"
        "finally:\n"
        "    for _f in os.listdir(%r):\n"
        "        os.remove(%r + '/' + _f)\n"
        "    os.rmdir(%r)\n"
        % (CPU_TAPS, CPU_REPS, CPU_DIR, CPU_DIR + "/tap.py", CPU_DIR, CPU_DIR, CPU_DIR)
    )
    cmd = [board_check.mpremote_bin(), "connect", port, "exec", mkdir, "+", "fs", "cp"]
    return cmd + [str(f) for f in CPU_FILES] + [":%s/" % CPU_DIR, "+", "exec", run]


def parse_cpu(text):
    """tap.py's 'BENCH {json}' lines merged, or an 'error' with the board's last lines."""
    got = {}
    for line in text.splitlines():
        if line.startswith("BENCH "):
            try:
                got.update(json.loads(line[6:]))
            except ValueError:
                pass
    if not got:
        got["error"] = " / ".join(text.strip().splitlines()[-3:]) or "no output"
    return got


def median(values):
    v = sorted(values)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def _ms(us):
    return None if us is None else round(us / 1000.0, 2)


def figures(raw):
    """The board's '@@BENCH' dict -> the results file's dict (medians in ms)."""
    totals = [
        a + t + (raw["result_shown_us"][i] if i < len(raw["result_shown_us"]) else 0)
        for i, (a, t) in enumerate(zip(raw["activation_us"], raw["tap_us"]))
    ]
    return {
        "board": raw.get("board"),
        "reader": raw.get("reader"),
        "cpu_mhz": raw.get("cpu_mhz"),
        "taps": len(raw["tap_us"]),
        "fare": raw["fare"],
        "reasons": sorted(set(raw["reasons"])),
        "activation_ms": _ms(median(raw["activation_us"])),
        "card_ms": {k: _ms(median(v)) for k, v in sorted(raw["card_us"].items())},
        "psam_ms": {k: _ms(median(v)) for k, v in sorted(raw["psam_us"].items())},
        "log_append_ms": _ms(median(raw["log_append_us"])),
        "log_flash": raw.get("log_flash") or {"skipped": "not reported by the board"},
        "flash_erase_ms": _ms(median(raw.get("flash_erase_us") or [])),
        "decide_ms": _ms(median(raw.get("decide_us") or [])),
        "decide_verdicts": sorted(set(raw.get("decide_verdicts") or [])),
        "decide_skipped": raw.get("decide_skipped"),
        "tap_ms": _ms(median(raw["tap_us"])),
        "result_shown_ms": _ms(median(raw["result_shown_us"])),
        "total_ms": _ms(median(totals)),
    }


def parse(text):
    for line in text.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", required=True)
    ap.add_argument("--n", type=int, default=10, help="taps (the card stays on the reader)")
    ap.add_argument("--fare", type=int, default=1, help="the test fare in fen")
    ap.add_argument("--test-card", action="store_true", help="yes, the card may be debited")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU benchmark (tap.py)")
    args = ap.parse_args(argv)
    if not args.test_card:
        print(
            "board-bench DEBITS the card on the reader %d times: use a test card and a test "
            "PSAM, then give --test-card (make board-bench ... TEST_CARD=1)" % args.n,
            file=sys.stderr,
        )
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="board-bench-") as tmp:
            cmd = command(args.port, compile_scripts(tmp), args.n, args.fare, validator_now())
            text = board_check._run(cmd, args.port, args.timeout)
    except board_check.CheckError as e:
        print("board-bench: %s" % e, file=sys.stderr)
        return 2
    raw = parse(text)
    if raw is None:
        print("board-bench: no result from the board:\n%s" % text.strip()[-800:], file=sys.stderr)
        return 2
    result = figures(raw)
    if not args.no_cpu:
        try:
            result["cpu"] = parse_cpu(board_check._run(cpu_command(args.port), args.port, 600))
        except board_check.CheckError as e:
            result["cpu"] = {"error": str(e)}
    result["port"] = args.port
    result["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    if "error" in raw:
        result["error"] = raw["error"]
    if result["taps"]:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(
            "board-bench: %d taps, median total %s ms -> %s"
            % (result["taps"], result["total_ms"], args.out)
        )
    if "error" in raw:
        print("board-bench: %s" % raw["error"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
