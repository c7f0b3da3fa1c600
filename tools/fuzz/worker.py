"""One atheris run of one target: python -m tools.fuzz.worker NAME SECONDS WORKDIR SEEDDIR...

Imports the target under atheris.instrument_imports() (so the firmware and driver modules it
loads are instrumented for coverage), runs libFuzzer for SECONDS, and keeps fuzzing after a
finding: each distinct escape (exception type + innermost repository line) is written once to
WORKDIR/findings/ and logged as a FINDING line. libFuzzer's final stats (stderr) give the
inputs and coverage that tools.fuzz.run collects (atheris leaves by os._exit: no exit hook)."""

import hashlib
import importlib
import os
import subprocess
import sys
import traceback

import atheris

from tools.fuzz import shim
from tools.fuzz.targets import HARNESS


def _where(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if f.filename.startswith(shim.ROOT)] or frames
    f = mine[-1]
    return "%s %s:%d" % (type(exc).__name__, os.path.relpath(f.filename, shim.ROOT), f.lineno)


_UNDER_TEST = tuple(os.path.join(shim.ROOT, d) + os.sep for d in ("firmware", "drivers", "tools"))
_NOT_UNDER_TEST = tuple(
    os.path.join(shim.ROOT, d) + os.sep for d in ("tools/sim", "tests", "boards")
)


def harness(name):
    """Modules the target imports that are not under test: the standard library, installed
    packages, the simulators and test fakes (tools/sim, tests/, boards/), and the target's
    HARNESS names. Listed by importing the target and running its seeds in a child process;
    atheris then leaves them uninstrumented: no coverage callbacks, not counted as coverage."""
    code = (
        "import sys\nfrom tools.fuzz import shim\nshim.install()\n"
        "import tools.fuzz.targets.%s as t\n"
        "import log\nlog.set_level(log.ERROR, echo=False)\n"
        "for s in t.SEEDS:\n"  # what the seeds import lazily too
        "    t.one_input(s)\n"
        "getattr(t, 'close', lambda: None)()\n"
        "for n, m in list(sys.modules.items()):\n"
        "    print(n, getattr(m, '__file__', None) or '')\n" % name
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=shim.ROOT, capture_output=True, text=True, check=True
    ).stdout
    names = set(HARNESS.get(name, ()))
    for line in out.splitlines():
        mod, _, path = line.partition(" ")
        path = os.path.abspath(path) if path else ""
        if not path.startswith(_UNDER_TEST) or path.startswith(_NOT_UNDER_TEST):
            names.add(mod)
    return sorted(names)


def main():
    name, seconds, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    seeds = sys.argv[4:]
    findings = os.path.join(workdir, "findings")
    corpus = os.path.join(workdir, "corpus")
    os.makedirs(findings, exist_ok=True)
    os.makedirs(corpus, exist_ok=True)
    os.environ["FUZZ_WORKDIR"] = workdir  # where a target keeps files (the collector's store)
    shim.install()
    import log

    log.set_level(log.ERROR, echo=False)  # a fuzzer's millions of warnings are noise
    with atheris.instrument_imports(exclude=harness(name)):
        target = importlib.import_module("tools.fuzz.targets." + name)
    seen = {}

    def test_one(data):
        try:
            target.one_input(data)
        except Exception as e:  # noqa: BLE001 - every escape is a finding, recorded
            key = _where(e)
            if key not in seen:
                seen[key] = hashlib.sha1(data).hexdigest()[:16]
                with open(os.path.join(findings, seen[key]), "wb") as f:
                    f.write(data)
                sys.stderr.write("FINDING %s: %s (%s)\n" % (key, e, seen[key]))
                sys.stderr.write("".join(traceback.format_exception(e)))

    args = [
        sys.argv[0],
        "-max_total_time=%d" % seconds,
        "-timeout=20",
        "-rss_limit_mb=1024",
        "-print_final_stats=1",
        "-max_len=1024",
        corpus,
    ] + seeds
    atheris.Setup(args, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
