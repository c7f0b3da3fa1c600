# Runs the test functions of one MicroPython test file and reports each one for the pytest plugin.
# Usage (the plugin does it): micropython tests/mpy/_runner.py tests/mpy/test_x.py name1 ...
# Output protocol: '@@MPTEST <name> PASS|FAIL|SKIP', detail lines, and '@@MPTEST END' at the end.
import sys

import mptest

_MARK = "@@MPTEST "


def _load(path):
    slash = path.rfind("/")
    folder = path[:slash] if slash >= 0 else "."
    name = path[slash + 1 :]
    if name.endswith(".py"):
        name = name[:-3]
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return __import__(name)


def _frozen_first():
    import os

    return bool(os.getenv("MPY_FROZEN_FIRST"))


def _run_one(mod, name):
    fn = getattr(mod, name, None)
    if fn is None:
        print(_MARK + name + " FAIL")
        print("test function not found after import")
        return
    setup = getattr(mod, "setup", None)
    teardown = getattr(mod, "teardown", None)
    try:
        if setup:
            setup()
        try:
            mptest.call(fn)
        finally:
            if teardown:
                teardown()
    except mptest.Skip as e:
        print(_MARK + name + " SKIP")
        print(e.args[0] if e.args else "")
        return
    except BaseException as e:  # noqa: B036 - report everything, including KeyboardInterrupt
        print(_MARK + name + " FAIL")
        sys.print_exception(e, sys.stdout)
        return
    print(_MARK + name + " PASS")


def main():
    path = sys.argv[1]
    names = sys.argv[2:]
    if ".frozen" in sys.path and _frozen_first():
        # micropython32: the script's own folder (tests/mpy) went first on the path, and a
        # helper frozen in (app_rig) must not load again from source into the heap.
        sys.path.remove(".frozen")
        sys.path.insert(0, ".frozen")
    try:
        mod = _load(path)
    except BaseException as e:  # noqa: B036
        for name in names:
            print(_MARK + name + " FAIL")
            print("importing " + path + " failed:")
            sys.print_exception(e, sys.stdout)
        print(_MARK + "END")
        return
    for name in names:
        _run_one(mod, name)
    print(_MARK + "END")


main()
