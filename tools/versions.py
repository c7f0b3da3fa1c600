"""The version set: firmware, record format, uplink protocol, bundle formats, collector schema.

    python -m tools.versions            # what this checkout builds and reads
    python -m tools.journal_decode --versions   # every operator tool prints the same

Read from firmware/versions.py (the firmware's version, set there only) and the modules that
define each format; a parameter bundle's version is set in its TOML only (docs/operators.md
"Versions").
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import versions as fw_versions  # noqa: E402


def current():
    out = dict(fw_versions.current())
    try:
        from tools.collector.db import SCHEMA_VERSION

        out["collector_schema"] = SCHEMA_VERSION
    except ImportError:  # a bench laptop without the collector's packages
        pass
    return out


def describe():
    v = current()
    lines = [
        "firmware %s" % v["firmware"],
        "record format %d (docs/record-format.md)" % v["record"],
        "uplink protocol %d, accepts %s (docs/protocol.md)"
        % (v["protocol"], ", ".join(map(str, v["protocol_accepted"]))),
        "parameter bundle formats %s (docs/parameters.md)"
        % ", ".join(map(str, v["bundle_formats"])),
    ]
    if "collector_schema" in v:
        lines.append("collector database schema %d" % v["collector_schema"])
    return "\n".join(lines)


class _Versions(argparse.Action):
    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(describe())
        parser.exit(0)


def add_flag(ap):
    """`--versions` on a tool's parser: print the version set and exit 0."""
    ap.add_argument(
        "--versions", action=_Versions, help="print the firmware and format versions, then exit"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.versions", description=__doc__.split("\n")[0]
    )
    ap.parse_args(argv)
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
