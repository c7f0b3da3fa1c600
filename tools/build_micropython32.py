"""Build `micropython32`: MicroPython v1.27's unix port as a 32-bit program with the application
frozen in, from the simulation board's own freeze manifest (boards/unix_sim/manifest.py), and the
heap bench's harness (HARNESS below) so that no measured code lives in the heap.

    python -m tools.build_micropython32 [--src PATH] [--out DIR] [--force] [--check]

Why: on a 32-bit build objects have an ESP32's sizes and frozen bytecode stays out of the heap as
it does on a board, so `-X heapsize=` and `gc.mem_alloc()` there say what a board would (the
64-bit port with `.mpy` files loaded into RAM overstates both).

Source (the first that exists): --src, else $MICROPY_SRC, else ../shared/micropython/ beside the
repository. Either a MicroPython v1.27 source tree (a checkout: only py/, extmod/, shared/, lib/,
mpy-cross/, ports/unix/ and tools/ are used; nothing is written into it) or a directory or path
of `micropython-1.27.*-unix-src.tar.gz` (unpacked once into build/micropython32/src/). The shared
copy is looked for as ../shared/micropython and, for a git worktree one level down,
../../shared/micropython.
Needs gcc, make and 32-bit libc headers (Debian: apt-get install gcc-multilib).

Output: build/micropython32/micropython32 and build/micropython32/mpy-cross (the matching
compiler). Objects are kept per source under build/micropython32/obj-<id>/, so a rebuild after
a firmware change only re-freezes (seconds); the first build takes about two minutes on 2 cores.
The build runs only when the content hash of its inputs changed (every file the manifest freezes,
the manifests, the source's identity, this script): `stamp` in the output directory, not
timestamps, since a fresh clone has new mtimes.

micropython-lib is not needed: the manifest's require("ssd1306") is answered from the copy the
project pins in .venv/mplib (tools/mplib_fetch.py), laid out as a one-package library that
MPY_LIB_DIR points at.
"""

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "micropython32"
BOARD_MANIFEST = ROOT / "boards" / "unix_sim" / "manifest.py"
MPLIB = ROOT / ".venv" / "mplib"
# micropython-lib packages the manifests require(), answered from MPLIB: name -> its files
MPLIB_PACKAGES = {"ssd1306": ("ssd1306.py",)}
# The heap bench's harness and the helpers it shares with the micropython32 tests, frozen too so
# that their code stays out of the heap they measure (a board carries none of it).
HARNESS = (
    ROOT / "tests" / "mpy" / "app_rig.py",
    ROOT / "tools" / "bench_mpy" / "bench_fakes.py",
    ROOT / "tools" / "bench_mpy" / "benchlib.py",
    ROOT / "tools" / "bench_mpy" / "app_heap.py",
)
TARBALL_GLOB = "micropython-1.27*-unix-src.tar.gz"
# The unix port's "standard" variant without SSL, btree and ffi (not on the validator either).
MAKE_FLAGS = (
    "VARIANT=standard",
    "MICROPY_FORCE_32BIT=1",
    "MICROPY_PY_BTREE=0",
    "MICROPY_PY_FFI=0",
    "MICROPY_PY_SSL=0",
    "MICROPY_SSL_AXTLS=0",
    "MICROPY_SSL_MBEDTLS=0",
    # symbols kept: the tap bench names C functions to callgrind (--zero-before/--dump-before
    # marks where the rider's wait ends); the code is the same as a stripped build's
    "STRIP=",
)
HOW_TO_GET = (
    "micropython32 needs a MicroPython v1.27 source: set MICROPY_SRC=/path/to/micropython "
    "(a checkout of the v1.27.0 tag: git clone -b v1.27.0 https://github.com/micropython/"
    "micropython) or put shared/micropython/ (micropython-1.27.0-unix-src.tar.gz) beside the "
    "repository; and Debian's gcc-multilib (apt-get install gcc-multilib)"
)


class Unavailable(RuntimeError):
    """No usable source or compiler: callers (tests) skip with this message."""


def binary(out=OUT):
    return out / "micropython32"


def default_source():
    env = os.environ.get("MICROPY_SRC")
    if env:
        return Path(env).expanduser().resolve()
    for base in (ROOT.parent, ROOT.parent.parent):  # beside the clone, or beside its worktrees
        shared = base / "shared" / "micropython"
        if shared.is_dir():
            return shared
    return None


def _tarball(src):
    if src.is_file() and src.name.endswith(".tar.gz"):
        return src
    if src.is_dir() and not (src / "py" / "mpconfig.h").exists():
        found = sorted(src.glob(TARBALL_GLOB))
        if found:
            return found[-1]
    return None


def _file_hash(path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h


def check_version(tree):
    text = (tree / "py" / "mpconfig.h").read_text(errors="replace")
    major = re.search(r"#define MICROPY_VERSION_MAJOR \(?(\d+)", text)
    minor = re.search(r"#define MICROPY_VERSION_MINOR \(?(\d+)", text)
    if not (major and minor) or (major.group(1), minor.group(1)) != ("1", "27"):
        raise Unavailable(
            "%s is not a MicroPython v1.27 source tree (py/mpconfig.h says %s.%s); %s"
            % (tree, major and major.group(1), minor and minor.group(1), HOW_TO_GET)
        )


def source_tree(src, out):
    """(tree, identity): the source tree to build from and a hash naming it."""
    if src is None or not src.exists():
        raise Unavailable(HOW_TO_GET)
    tar = _tarball(src)
    if tar is not None:
        ident = _file_hash(tar).hexdigest()[:16]
        tree_root = out / "src" / ident
        marker = tree_root / ".unpacked"
        if not marker.exists():
            if tree_root.exists():
                shutil.rmtree(tree_root)
            tree_root.mkdir(parents=True)
            with tarfile.open(tar) as t:
                t.extractall(tree_root, filter="data")
            marker.write_text(str(tar) + "\n")
        tops = [p for p in tree_root.iterdir() if (p / "py" / "mpconfig.h").exists()]
        if not tops:
            raise Unavailable("%s holds no MicroPython source; %s" % (tar, HOW_TO_GET))
        tree = tops[0]
    elif (src / "py" / "mpconfig.h").exists():
        tree = src
        h = hashlib.sha256(str(tree).encode())
        for top in ("py", "extmod", "ports/unix", "shared", "mpy-cross"):
            for p in sorted((tree / top).rglob("*")):
                if p.is_file() and "build" not in p.relative_to(tree).parts[:3]:
                    if p.suffix in (".c", ".h", ".mk", ".py") or p.name == "Makefile":
                        h.update(str(p.relative_to(tree)).encode())
                        _file_hash(p, h)
        ident = h.hexdigest()[:16]
    else:
        raise Unavailable(
            "%s is neither a MicroPython source tree nor holds %s; %s"
            % (src, TARBALL_GLOB, HOW_TO_GET)
        )
    check_version(tree)
    return tree, ident


def write_inputs(work):
    """The wrapper manifest and the one-package micropython-lib; returns the manifest path."""
    lib = work / "mplib"
    if lib.exists():
        shutil.rmtree(lib)
    (lib / "micropython").mkdir(parents=True)
    (lib / "README.md").write_text("micropython-lib stand-in: packages pinned in .venv/mplib\n")
    for name, files in MPLIB_PACKAGES.items():
        pkg = lib / "micropython" / name
        pkg.mkdir()
        for f in files:
            if not (MPLIB / f).exists():
                raise Unavailable("%s missing: run `make setup` first" % (MPLIB / f))
            shutil.copy(MPLIB / f, pkg / f)
        (pkg / "manifest.py").write_text("".join('module("%s")\n' % f for f in files))
    manifest = work / "manifest.py"
    manifest.write_text(
        "# Generated by tools/build_micropython32.py: asyncio (as on every port), the board, and\n"
        "# the bench harness (run as `micropython32 -m app_heap`).\n"
        'include("$(MPY_DIR)/extmod/asyncio")\n'
        'include("%s")\n' % BOARD_MANIFEST
        + "".join('module("%s", base_path="%s")\n' % (p.name, p.parent) for p in HARNESS)
    )
    return manifest, lib


def frozen_files(tree, manifest, lib):
    """Every file the manifest freezes (MicroPython's own manifest reader), manifests included."""
    sys.path.insert(0, str(tree / "tools"))
    try:
        import manifestfile
    finally:
        sys.path.pop(0)
    m = manifestfile.ManifestFile(
        manifestfile.MODE_FREEZE,
        {"MPY_DIR": str(tree), "MPY_LIB_DIR": str(lib), "PORT_DIR": str(tree / "ports" / "unix")},
    )
    m.execute(str(manifest))
    files = {Path(r.full_path) for r in m.files()}
    files |= set((ROOT / "boards").rglob("manifest*.py"))
    return sorted(files)


def input_hash(ident, files):
    h = hashlib.sha256()
    h.update(ident.encode())
    h.update(" ".join(MAKE_FLAGS).encode())
    _file_hash(Path(__file__), h)
    for f in files:
        try:
            name = str(f.relative_to(ROOT))
        except ValueError:
            name = f.name  # asyncio in the source tree, mplib copies: content is what counts
        h.update(name.encode())
        _file_hash(f, h)
    return h.hexdigest()


def run_make(args, log):
    with open(log, "ab") as f:
        proc = subprocess.run(["make", *args], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = Path(log).read_text(errors="replace")[-3000:]
        raise RuntimeError(
            "micropython32 build failed (make %s), log %s:\n%s" % (" ".join(args[:3]), log, tail)
        )


def build(src=None, out=OUT, force=False, quiet=False):
    """Make sure out/micropython32 is current; returns its path. Unavailable if it cannot be."""
    say = (lambda *a: None) if quiet else (lambda *a: print("[micropython32]", *a, flush=True))
    if shutil.which("make") is None or shutil.which("gcc") is None:
        raise Unavailable("gcc and make are needed; " + HOW_TO_GET)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, others then find it current
        tree, ident = source_tree(src if src is not None else default_source(), out)
        work = out / "work"
        work.mkdir(exist_ok=True)
        manifest, lib = write_inputs(work)
        digest = input_hash(ident, frozen_files(tree, manifest, lib))
        stamp = out / "stamp"
        exe = binary(out)
        if (
            not force
            and exe.exists()
            and (out / "mpy-cross").exists()
            and stamp.exists()
            and stamp.read_text().strip() == digest
        ):
            return exe
        if (
            not Path("/usr/include/i386-linux-gnu").exists()
            and not Path("/usr/lib32/crt1.o").exists()
        ):
            raise Unavailable(
                "no 32-bit libc headers: apt-get install gcc-multilib; " + HOW_TO_GET
            )
        obj = out / ("obj-" + ident)
        log = out / "build.log"
        log.write_text("")
        jobs = "-j%d" % (os.cpu_count() or 1)
        say("building from %s (log %s)" % (tree, log))
        run_make(["-C", str(tree / "mpy-cross"), jobs, "BUILD=%s" % (obj / "mpy-cross")], log)
        cross = obj / "mpy-cross" / "mpy-cross"
        run_make(
            [
                "-C",
                str(tree / "ports" / "unix"),
                jobs,
                *MAKE_FLAGS,
                "FROZEN_MANIFEST=%s" % manifest,
                "MPY_LIB_DIR=%s" % lib,
                "MICROPY_MPYCROSS=%s" % cross,
                "MICROPY_MPYCROSS_DEPENDENCY=%s" % cross,
                "BUILD=%s" % (obj / "unix"),
                "PROG=micropython32",
            ],
            log,
        )
        for name, built in (
            ("micropython32", obj / "unix" / "micropython32"),
            ("mpy-cross", cross),
        ):
            tmp = out / (name + ".tmp")
            shutil.copy2(built, tmp)
            os.replace(tmp, out / name)
        stamp.write_text(digest + "\n")
        res = subprocess.run(
            [str(exe), "-c", "import sys; print(sys.implementation._machine, sys.maxsize)"],
            capture_output=True,
            text=True,
        )
        say("built %s (%s)" % (exe, res.stdout.strip()))
        return exe


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.build_micropython32",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--src", help="MicroPython v1.27 source tree or unix-src tarball")
    ap.add_argument(
        "--out", default=str(OUT), help="output directory (default build/micropython32)"
    )
    ap.add_argument("--force", action="store_true", help="rebuild even if the stamp matches")
    ap.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if current, 1 if a build is needed, 2 if it cannot be built",
    )
    args = ap.parse_args(argv)
    src = Path(args.src).expanduser().resolve() if args.src else None
    try:
        if args.check:
            return 0 if is_current(src, Path(args.out)) else 1
        build(src, Path(args.out), args.force)
    except Unavailable as e:
        print("micropython32: %s" % e, file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


def is_current(src=None, out=OUT):
    tree, ident = source_tree(src if src is not None else default_source(), out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    manifest, lib = write_inputs(work)
    stamp = out / "stamp"
    return (
        binary(out).exists()
        and stamp.exists()
        and stamp.read_text().strip() == input_hash(ident, frozen_files(tree, manifest, lib))
    )


if __name__ == "__main__":
    raise SystemExit(main())
