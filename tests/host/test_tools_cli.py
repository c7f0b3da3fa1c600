"""Every operator-facing tool runs from any folder (make setup puts the repository on the venv's
path) and its --help is whole: a description, and a help text for every option."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = (
    "tools.provision",
    "tools.device_backup",
    "tools.journal_decode",
    "tools.params_compile",
    "tools.params_inspect",
    "tools.params_sign",
    "tools.partitions",
    "tools.simbench",
    "tools.build_firmware",
    "tools.collector",
)


def _help(module, cwd):
    return subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("module", TOOLS)
def test_help_from_another_folder(module, tmp_path):
    proc = _help(module, tmp_path)
    if "No module named 'tools'" in proc.stderr:
        pytest.fail("%s cannot run outside the repository: run `make setup`" % module)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert not re.search(r"\bissue \d+", proc.stdout, re.I), "help names an issue number"


def test_provision_help_explains_every_option(tmp_path):
    text = _help("tools.provision", tmp_path).stdout
    options = text.split("options:", 1)[1]
    # an option line with nothing after its metavar, and no indented text below it
    lines = options.splitlines()
    bare = []
    for i, line in enumerate(lines):
        m = re.match(r"^  (-{1,2}[\w-]+)(?: [A-Z_:{}\[\],a-z0-9-]+)?\s*$", line)
        if m and not (i + 1 < len(lines) and lines[i + 1].startswith(" " * 10)):
            bare.append(m.group(1))
    assert bare == [], "options without help: %s" % bare
    assert "NOT registered" in text  # what happens without --collector-db
    assert text.split("options:")[0].rstrip().endswith(")."), "the description is cut"
