"""Run every fuzz target with atheris for a bounded time and write bench/fuzz.json.

    python -m tools.fuzz.run [--seconds N] [--jobs J] [--targets a,b] [--out bench/fuzz.json]
    python -m tools.fuzz.run --seed-corpus     # (re)write the targets' SEEDS into the corpus

N (FUZZ_SECONDS, default 80) is per target; J targets run at once (default 2: this machine has
two cores), so the whole run takes about ceil(targets / J) * N. Working corpora and findings go
to bench/out/fuzz/<target>/ (not committed); a finding worth keeping is copied by hand to
tools/fuzz/regress/<target>/ with its fix, and tests/host/test_fuzz_corpus.py replays it."""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time

from tools.fuzz import shim
from tools.fuzz.targets import NAMES

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
REGRESS = os.path.join(HERE, "regress")


def inputs_of(name):
    """Every committed input of a target: corpus seeds and regression inputs, sorted paths."""
    out = []
    for base in (CORPUS, REGRESS):
        d = os.path.join(base, name)
        if os.path.isdir(d):
            out += [os.path.join(d, f) for f in sorted(os.listdir(d))]
    return out


def seed_corpus():
    import importlib

    shim.install()
    for name in NAMES:
        target = importlib.import_module("tools.fuzz.targets." + name)
        d = os.path.join(CORPUS, name)
        os.makedirs(d, exist_ok=True)
        for data in target.SEEDS:
            with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
                f.write(data)
        print("%s: %d seeds" % (name, len(target.SEEDS)))


def _stats(text):
    units = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
    corp = re.findall(r"corp: (\d+)/", text)
    return {
        "inputs": int(units[-1]) if units else 0,
        "coverage_edges": int(cov[-1][0]) if cov else 0,
        "coverage_features": int(cov[-1][1]) if cov else 0,
        "corpus": int(corp[-1]) if corp else 0,
        "findings": sorted(set(re.findall(r"^FINDING (.*?): ", text, re.M))),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=int(os.getenv("FUZZ_SECONDS", "80")))
    p.add_argument("--jobs", type=int, default=int(os.getenv("FUZZ_JOBS", "2")))
    p.add_argument("--targets", default=",".join(NAMES))
    p.add_argument("--out", default=os.path.join(shim.ROOT, "bench", "fuzz.json"))
    p.add_argument("--workdir", default=os.path.join(shim.ROOT, "bench", "out", "fuzz"))
    p.add_argument("--seed-corpus", action="store_true")
    p.add_argument(
        "--since", type=int, help="epoch seconds `make fuzz` started (its long mode included)"
    )
    a = p.parse_args(argv)
    if a.seed_corpus:
        seed_corpus()
        return 0
    names = [n for n in a.targets.split(",") if n]
    pending = list(names)
    running = {}
    results = {}
    t0 = time.monotonic()
    while pending or running:
        while pending and len(running) < a.jobs:
            name = pending.pop(0)
            work = os.path.join(a.workdir, name)
            os.makedirs(work, exist_ok=True)
            log = open(os.path.join(work, "log.txt"), "w")
            seeds = [d for d in (os.path.join(CORPUS, name), os.path.join(REGRESS, name))]
            cmd = [sys.executable, "-m", "tools.fuzz.worker", name, str(a.seconds), work]
            cmd += [d for d in seeds if os.path.isdir(d)]
            proc = subprocess.Popen(cmd, cwd=shim.ROOT, stdout=log, stderr=subprocess.STDOUT)
            running[name] = (proc, log, work)
        time.sleep(1)
        for name in list(running):
            proc, log, work = running[name]
            if proc.poll() is None:
                continue
            log.close()
            with open(os.path.join(work, "log.txt")) as f:
                r = _stats(f.read())
            r["exit"] = proc.returncode
            results[name] = r
            del running[name]
            print(
                "fuzz %-10s inputs=%d cov=%d ft=%d corpus=%d findings=%d%s"
                % (
                    name,
                    r["inputs"],
                    r["coverage_edges"],
                    r["coverage_features"],
                    r["corpus"],
                    len(r["findings"]),
                    "".join("\n  " + x for x in r["findings"]),
                ),
                flush=True,
            )
    total = sum(r["inputs"] for r in results.values())
    escapes = sum(len(r["findings"]) + (1 if r["exit"] else 0) for r in results.values())
    out = {
        "command": ("make fuzz (%s)" if a.since else "%s")
        % ("python -m tools.fuzz.run --seconds %d --jobs %d" % (a.seconds, a.jobs)),
        "fuzz_seconds_per_target": a.seconds,
        "fuzz_wall_seconds": round(time.monotonic() - t0),
        "fuzz_inputs_total": total,
        "fuzz_targets": len(results),
        "fuzz_escapes": escapes,
        "targets": results,
    }
    if a.since:
        out["make_fuzz_wall_seconds"] = round(time.time() - a.since)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(
        "fuzz total inputs=%d targets=%d escapes=%d -> %s"
        % (total, len(results), escapes, os.path.relpath(a.out, shim.ROOT))
    )
    return 1 if escapes else 0


if __name__ == "__main__":
    sys.exit(main())
