"""Docs and comments cite public sources by name (docs/sources.md), never the research notes that
live outside the repository (a clone does not have them) nor a machine path (issue 24, point 8).
The MicroPython source path of tools/build_micropython32.py is a build input, not a citation."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", "build", ".git", "bench"}

# Pointers into the notes: their folder, their file names, or a machine path to them. Built from
# parts so this file does not match itself.
NOTES = ("hardware", "tunion-card", "fare-collection")
POINTER = re.compile(
    r"shared/(?:reference|seed)|/work/share[d]|DIGEST[.]md|\b(?:%s)[.]md\b" % "|".join(NOTES)
)


def _cited_files():
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP or path.suffix not in (".py", ".md") or not path.is_file():
            continue
        yield rel, path


def test_no_pointer_into_the_research_notes():
    found = []
    for rel, path in _cited_files():
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if POINTER.search(line):
                found.append("%s:%d: %s" % (rel, no, line.strip()[:100]))
    assert not found, "name the public source (docs/sources.md) instead:\n" + "\n".join(found)


def test_sources_index_is_linked():
    assert (ROOT / "docs" / "sources.md").is_file()
    assert "docs/sources.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "sources.md" in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_sources_index_defines_the_short_names_the_docs_use():
    index = (ROOT / "docs" / "sources.md").read_text(encoding="utf-8")
    for name in ("TULAB", "SH-AGM", "BJ-BUS", "MZT", "QT-TOOL", "JTB-H", "TUM", "CARDLAN-H"):
        assert "**%s**" % name in index, name
