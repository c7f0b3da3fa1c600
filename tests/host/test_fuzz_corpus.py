"""Coverage-guided fuzz targets (issue 26, tools/fuzz/): every committed corpus seed and every
regression input of every target runs through its one_input() here, so `make test` keeps each
finding fixed and each seed honest without atheris running. `make fuzz` runs the fuzzer itself
(python -m tools.fuzz.run, bench/fuzz.json). docs/robustness.md."""

import importlib
import os

import pytest

from tools.fuzz import run
from tools.fuzz.targets import NAMES

CASES = [(n, p) for n in NAMES for p in run.inputs_of(n)]


@pytest.fixture(scope="module", autouse=True)
def _close_targets():
    yield
    for name in NAMES:
        close = getattr(importlib.import_module("tools.fuzz.targets." + name), "close", None)
        if close is not None:
            close()


def test_every_target_has_a_corpus():
    for name in NAMES:
        assert any(n == name for n, _ in CASES), "no corpus for " + name


@pytest.mark.parametrize(
    "name,path", CASES, ids=["%s/%s" % (n, os.path.basename(p)) for n, p in CASES]
)
def test_committed_input(name, path):
    target = importlib.import_module("tools.fuzz.targets." + name)
    with open(path, "rb") as f:
        target.one_input(f.read())
