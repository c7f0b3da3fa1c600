"""Shared pytest set-up: the MicroPython/mpy-cross plugin and fixtures every host test can use,
and how `make test` spreads the suite over the cores (pytest-xdist, `--dist loadfile`)."""

pytest_plugins = ["tests.mpy_plugin"]

# Files whose tests are long and independent: under xdist each of their tests is a work unit of
# its own instead of the whole file going to one worker. A tests/mpy file never belongs here: one
# MicroPython process runs the whole file (tests/mpy_plugin.py).
SPREAD_FILES = ("tests/host/test_simbench.py",)

# The longest files start first, so no worker is left with one of them at the end of the run
# (measured: `make test PYTEST_ARGS=--durations=30`).
SLOW_FIRST = (
    "tests/mpy/test_params_download.py",
    "tests/host/test_simbench.py",
    "tests/host/test_benchmarks.py",
    "tests/mpy/test_boot.py",
    "tests/mpy/test_modem_faults.py",
    "tests/mpy/test_esp32_boards.py",
    "tests/mpy/test_fuzz_modem.py",
    "tests/mpy/test_journal_mem.py",
    "tests/mpy/test_modem.py",
)


def _file_of(nodeid):
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(_file_of(item.nodeid), len(rank)))  # stable


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        """loadfile, except that the tests of SPREAD_FILES go out one by one."""

        def _split_scope(self, nodeid):
            name = _file_of(nodeid)
            if name in SPREAD_FILES:
                return nodeid
            if name.startswith("tests/mpy/") and nodeid.endswith("]"):
                # a `params=` MicroPython file: one process per value, each its own work unit
                return name + nodeid[nodeid.rindex("[") :]
            return name

    return FileScheduling(config, log)
