"""Run the hardware-independent MicroPython tests on a board: `make board-test PORT=/dev/ttyUSB0`.

    python -m tools.board_test --port /dev/ttyUSB0 [--file test_utils.py ...] [--timeout 300]

For each test file (BOARD_TESTS: tests/mpy files that need no simulator, no host file and no
stand-in), one mpremote session: the soft reset mpremote does on entering the raw REPL gives a
fresh heap and does not start the application (main.py runs only after a normal reset), the file,
tests/mpy/mptest.py, _runner.py and the helpers it imports go to `mpytest/` on the board's file
system, and _runner.py runs its test functions with the protocol the host run uses ('@@MPTEST
<name> PASS|FAIL|SKIP', detail lines, '@@MPTEST END'). The firmware modules come from the board's
/lib (`make deploy` first). Results are printed per test function as pytest prints them; a
function the board did not report (a reset, a MemoryError at import) is a failure. `mpytest/` is
removed at the end.

Exit status: 0 all passed or skipped, 1 a test failed, 2 the board could not be reached.
A board whose application runs its watchdog must be started in safe mode first (docs/boot.md):
the tests do not feed it.
"""

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MPY_DIR = ROOT / "tests" / "mpy"
BOARD_DIR = "mpytest"  # relative to the board's working directory (/ after a reset)
MARK = "@@MPTEST "
# Tests that run on the board as they are: no `server=` simulator, no ESP32 stand-in, no host
# paths or environment (tests/host/test_board_test.py checks each stays so).
BOARD_TESTS = (
    "test_utils.py",
    "test_record.py",
    "test_iso7816.py",
    "test_pn532_frames.py",
    "test_isodep.py",
    "test_isodep_wtx.py",
    "test_tunion.py",
    "test_fare.py",
    "test_fare_tunion.py",
    "test_cardlists.py",
    "test_bundle.py",
    "test_atmodem.py",
    "test_txpace.py",
    "test_ramdisk.py",
    "test_journal.py",
    "test_params.py",
    "test_purchase_cross.py",
)
# Helpers a test may import that are not firmware (the board has those in /lib).
HELPER_DIRS = (MPY_DIR, ROOT / "boards" / "unix_sim")
_IMPORT = re.compile(r"^\s*(?:import|from)\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)
DIRECTIVE = re.compile(r"^#\s*mpy:\s*(.*)$")


class BoardError(Exception):
    pass


def mpremote_bin():
    if os.environ.get("MPREMOTE"):  # another mpremote (the tests' stand-in)
        return os.environ["MPREMOTE"]
    local = ROOT / ".venv" / "bin" / "mpremote"
    return str(local) if local.exists() else (shutil.which("mpremote") or "mpremote")


def test_names(path):
    """The file's test functions in definition order (as the host run collects them)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    return [
        n.name
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test_")
    ]


def helpers(path, seen=None):
    """tests/mpy helper files the test file needs, with their own helpers (not firmware)."""
    seen = seen if seen is not None else []
    for name in _IMPORT.findall(Path(path).read_text(encoding="utf-8")):
        if name == "mptest":  # copied with _runner.py; uses repo_root() only on the host
            continue
        for folder in HELPER_DIRS:
            f = folder / (name + ".py")
            if f.exists() and f not in seen and f.name != Path(path).name:
                seen.append(f)
                helpers(f, seen)
                break
    return seen


def timeout_of(path):
    with open(path, encoding="utf-8") as f:
        m = DIRECTIVE.match(f.readline().strip())
    if m:
        for word in m.group(1).split():
            key, _, value = word.partition("=")
            if key == "timeout":
                return float(value)
    return 300.0


_MKDIR = "import os\ntry:\n    os.mkdir(%r)\nexcept OSError:\n    pass\n" % BOARD_DIR
_CLEAN = (
    "import os\ntry:\n    for _n in os.listdir(%r):\n        os.remove(%r + '/' + _n)\n"
    "    os.rmdir(%r)\nexcept OSError:\n    pass\n" % (BOARD_DIR, BOARD_DIR, BOARD_DIR)
)


def run_snippet(test_file, names):
    """What the board executes: _runner.py with the file and its test names as sys.argv."""
    argv = ["_runner", "%s/%s" % (BOARD_DIR, test_file)] + list(names)
    return (
        "import sys\n"
        "del sys.argv[:]\n"
        "sys.argv.extend(%r)\n"
        "sys.path.insert(0, %r)\n"
        "exec(open(%r).read())\n" % (argv, BOARD_DIR, BOARD_DIR + "/_runner.py")
    )


def file_command(port, test_file):
    """The mpremote command line for one test file -> (argv, test names)."""
    path = MPY_DIR / test_file
    names = test_names(path)
    files = [MPY_DIR / "_runner.py", MPY_DIR / "mptest.py", path] + helpers(path)
    cmd = [mpremote_bin(), "connect", port, "exec", _MKDIR, "+", "fs", "cp"]
    cmd += [str(f) for f in files] + [":%s/" % BOARD_DIR]
    cmd += ["+", "exec", run_snippet(test_file, names)]
    return cmd, names


def clean_command(port):
    return [mpremote_bin(), "connect", port, "exec", _CLEAN]


def parse(output, names):
    """_runner.py's protocol -> {name: (PASS|FAIL|SKIP, detail)}; names not reported FAIL."""
    results = {}
    current = None
    detail = []
    ended = False
    for line in output.splitlines():
        line = line.rstrip("\r")
        if line.startswith(MARK):
            word = line[len(MARK) :].split(" ", 2)
            if current is not None:
                results[current[0]] = (current[1], "\n".join(detail))
                current = None
            if word[0] == "END":
                ended = True
                continue
            current = (word[0], word[1] if len(word) > 1 else "FAIL")
            detail = []
        elif current is not None:
            detail.append(line)
    if current is not None:
        results[current[0]] = (current[1], "\n".join(detail) + "\n[no END marker: board reset?]")
    tail = "\n".join(output.strip().splitlines()[-8:])
    for name in names:
        if name not in results:
            why = "not run" if ended else "not reported (the board stopped or reset)"
            results[name] = ("FAIL", "%s; board output:\n%s" % (why, tail))
    return results


def run_file(port, test_file):
    cmd, names = file_command(port, test_file)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_of(MPY_DIR / test_file)
        )
        out = proc.stdout
        if proc.returncode != 0 and MARK not in out:
            err = (proc.stderr or proc.stdout).strip()
            if "failed to access" in err or "no device" in err or "could not" in err:
                raise BoardError("mpremote cannot reach %s: %s" % (port, err[-300:]))
            out += "\n" + err
    except FileNotFoundError:
        raise BoardError("mpremote not found: run `make setup` first")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        out = (out or "") + "\n[timed out]"
    return names, parse(out, names)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    ap.add_argument("--file", action="append", help="a tests/mpy file (default: BOARD_TESTS)")
    args = ap.parse_args(argv)
    files = args.file or list(BOARD_TESTS)
    for f in files:
        if not (MPY_DIR / f).exists():
            print("board-test: no tests/mpy/%s" % f, file=sys.stderr)
            return 2
    count = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    failures = []
    try:
        for f in files:
            names, results = run_file(args.port, f)
            for name in names:
                status, detail = results[name]
                status = status if status in count else "FAIL"
                count[status] += 1
                word = {"PASS": "PASSED", "FAIL": "FAILED", "SKIP": "SKIPPED"}[status]
                print("tests/mpy/%s::%s %s" % (f, name, word), flush=True)
                if status == "FAIL":
                    failures.append(("tests/mpy/%s::%s" % (f, name), detail))
        subprocess.run(clean_command(args.port), capture_output=True, timeout=60)
    except BoardError as e:
        print("board-test: %s" % e, file=sys.stderr)
        return 2
    for where, detail in failures:
        print("\n---- %s (on the board)\n%s" % (where, detail.strip()))
    print(
        "\nboard-test on %s: %d passed, %d failed, %d skipped"
        % (args.port, count["PASS"], count["FAIL"], count["SKIP"])
    )
    return 1 if count["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
