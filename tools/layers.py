"""The firmware's packages and layers, and the check that imports point one way (issue 25).

    python -m tools.layers             the import graph by package, and any import that crosses
                                       a layer the wrong way (exit 1)
    python -m tools.layers --svg FILE  draw the layers (docs/architecture.svg, `make architecture`)

Every module under firmware/ and drivers/ belongs to exactly one package of PACKAGES; a package
sits on a layer, and a module may import modules of its own package or of a lower layer only.
The device drivers (NFC readers, PSAM link, modem, RTC chips) are one layer above the core and
below everything that knows about cards or fares: they may use the core's utilities and nothing
else. docs/architecture.md explains the cut; tests/host/test_layers.py keeps it true. The
packages are named here before the files move into folders of their own, so the folders can
follow this table without changing an import.
"""

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("firmware", "drivers")

# package: (layer, what it holds, modules). Layer 0 is the bottom.
PACKAGES = {
    "core": (
        0,
        "shared utilities: logging, checksums, time arithmetic, BCD, byte rings, typed link "
        "errors, the uplink's transport interface, HMAC and P-256 verification",
        ("log", "crc", "timeutil", "bcd", "ringbuf", "linkerr", "transport", "hmac256", "p256"),
    ),
    "nfc": (
        1,
        "the contactless readers: chip families, their bus transports, ISO 14443-4",
        ("reader", "pn532", "pn532_i2c", "pn532_spi", "pn532_uart", "rc522", "isodep"),
    ),
    "psam": (1, "the PSAM's contact link: ISO 7816-3 T=0 over a UART", ("iso7816", "psam_link")),
    "modem": (
        1,
        "the cellular modem: AT engine, dialects, HTTP over the modem or sockets, paced writes",
        ("atmodem", "modem", "modem_simcom", "modem_quectel", "http_socket", "txpace"),
    ),
    "rtc": (1, "battery-backed clock chips", ("rtcchip", "ds3231", "pcf8563")),
    "storage": (
        1,
        "the 64-byte record and the transaction log on raw flash (and the old journal it "
        "migrates from)",
        ("record", "txlog", "txlog_migrate", "journal", "journal_nvs"),
    ),
    "card": (
        2,
        "the T-Union card and the purchase: APDUs, the card's files, the PSAM application, "
        "sale, recovery and settlement",
        ("apdu", "tunion", "bus1a", "psam_app", "purchase", "settle"),
    ),
    "params": (
        2,
        "parameters and fares: signed bundles, their download and install, black and white "
        "lists, the fare engine",
        ("cardlists", "fare", "bundle", "bundle_build", "blmerge", "chunkdl", "params"),
    ),
    "uplink": (2, "the upload protocol and its client", ("uplink_proto", "uplink")),
    "ui": (
        2,
        "what the rider sees and hears: messages, font, display, LEDs and buzzer",
        ("messages", "font_zh16", "display", "feedback"),
    ),
    "app": (
        3,
        "the validator: boot, configuration, clock and its trust, decision, faults, versions, "
        "the tap loop",
        (
            "app",
            "main",
            "boot",
            "bootmode",
            "config",
            "clock",
            "timetrust",
            "decide",
            "faults",
            "versions",
        ),
    ),
}


def package_of():
    """module name -> package name."""
    out = {}
    for pkg, (_layer, _what, mods) in PACKAGES.items():
        for m in mods:
            if m in out:
                raise ValueError("module %s in both %s and %s" % (m, out[m], pkg))
            out[m] = pkg
    return out


def modules(root=ROOT):
    """module name -> its file, for every firmware and driver module."""
    out = {}
    for folder in SOURCES:
        for f in sorted((Path(root) / folder).glob("*.py")):
            out[f.stem] = f
    return out


def imports(path, known):
    """(module imported, line) for each import of a known module in the file, lazy ones too."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in known:
                found.append((top, node.lineno))
    return found


def check(root=ROOT):
    """-> (edges, problems): package edges {(from, to)} and what breaks the rules, as text."""
    mods = modules(root)
    pkg = package_of()
    problems = []
    for m in sorted(mods):
        if m not in pkg:
            problems.append("%s: in no package of tools/layers.py PACKAGES" % mods[m].name)
    for m in sorted(pkg):
        if m not in mods:
            problems.append("PACKAGES names %s, which is not a module" % m)
    edges = set()
    for m, path in sorted(mods.items()):
        if m not in pkg:
            continue
        src = pkg[m]
        for target, line in imports(path, mods):
            dst = pkg.get(target)
            if dst is None or dst == src:
                continue
            edges.add((src, dst))
            if PACKAGES[dst][0] >= PACKAGES[src][0]:
                problems.append(
                    "%s:%d: %s (%s, layer %d) imports %s (%s, layer %d): a layer may only "
                    "use lower ones"
                    % (
                        path.relative_to(root),
                        line,
                        m,
                        src,
                        PACKAGES[src][0],
                        target,
                        dst,
                        PACKAGES[dst][0],
                    )
                )
    return edges, problems


def svg(edges):
    """The layers as boxes, bottom layer at the bottom, with the package edges as lines."""
    by_layer = {}
    for name, (layer, _w, mods) in PACKAGES.items():
        by_layer.setdefault(layer, []).append((name, mods))
    top = max(by_layer)
    box_w, box_h, gap_x, gap_y, pad = 190, 64, 20, 56, 20
    widest = max(len(v) for v in by_layer.values())
    width = pad * 2 + widest * box_w + (widest - 1) * gap_x
    height = pad * 2 + (top + 1) * box_h + top * gap_y
    where = {}
    parts = []
    for layer, items in sorted(by_layer.items()):
        y = pad + (top - layer) * (box_h + gap_y)
        row_w = len(items) * box_w + (len(items) - 1) * gap_x
        x0 = (width - row_w) / 2
        for i, (name, mods) in enumerate(items):
            x = x0 + i * (box_w + gap_x)
            where[name] = (x + box_w / 2, y, y + box_h)
            listed = ", ".join(mods)
            lines = [listed[j : j + 34] for j in range(0, min(len(listed), 102), 34)]
            parts.append(
                '<rect x="%d" y="%d" width="%d" height="%d" rx="6" fill="#eef3fb" '
                'stroke="#345"/>' % (x, y, box_w, box_h)
            )
            parts.append(
                '<text x="%d" y="%d" font-weight="bold">%s (layer %d)</text>'
                % (x + 8, y + 16, name, layer)
            )
            for k, text in enumerate(lines):
                parts.append(
                    '<text x="%d" y="%d" font-size="10">%s</text>'
                    % (x + 8, y + 31 + 11 * k, _esc(text))
                )
    arrows = []
    for src, dst in sorted(edges):
        sx, s_top, _sb = where[src]
        dx, _dt, d_bottom = where[dst]
        arrows.append(
            '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#789" marker-end="url(#a)"/>'
            % (sx, s_top + box_h, dx, d_bottom)
        )
    return "\n".join(
        [
            '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
            'font-family="sans-serif" font-size="12">' % (width, height),
            '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="7" refY="4" '
            'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#789"/></marker></defs>',
            "<!-- made by tools/layers.py (make architecture): imports point down only -->",
        ]
        + arrows
        + parts
        + ["</svg>", ""]
    )


def _esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--svg", type=Path, help="write the layer picture here")
    args = ap.parse_args(argv)
    edges, problems = check()
    if args.svg:
        args.svg.write_text(svg(edges), encoding="utf-8")
        print("-> %s" % args.svg)
    for layer in sorted({v[0] for v in PACKAGES.values()}, reverse=True):
        for name, (lay, _what, mods) in PACKAGES.items():
            if lay == layer:
                uses = sorted(d for s, d in edges if s == name)
                print(
                    "layer %d  %-8s %2d modules, uses %s"
                    % (layer, name, len(mods), ", ".join(uses) or "-")
                )
    for p in problems:
        print("WRONG WAY: %s" % p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
