"""Print what a parameter bundle holds (docs/parameters.md).

    python -m tools.params_inspect bundle.bin --key-hex 0011... [--lookup 3104991585000011383]
    python -m tools.params_inspect bundle.bin --config     # the config section as JSON

Without a key the MAC is not checked and the output says so. Exit status: 0 fine, 1 refused
(MAC, format), 2 usage or file errors.
"""

import argparse
import json
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import bundle  # noqa: E402
import cardlists  # noqa: E402
import timeutil  # noqa: E402


def _when(secs):
    y, m, d, hh, mi, ss = timeutil.from_seconds(secs)
    return "%d (%04d-%02d-%02d %02d:%02d:%02d UTC)" % (secs, y, m, d, hh, mi, ss)


def inspect(f, size, key=None, lookups=(), out=print):
    """Describe the bundle in `f`; returns the Header. Raises bundle.BundleError if refused."""
    if key is not None:
        hdr = bundle.verify_file(f, key, size)
        out("MAC: ok")
    else:
        f.seek(0)
        head = f.read(bundle.HEADER)
        if len(head) < bundle.HEADER or struct.unpack_from(">I", head, 20)[0] != size:
            raise bundle.BundleError("truncated or padded")
        hdr = bundle._parse_header(head, size)
        out("MAC: NOT CHECKED (no key given)")
    out("version: %d" % hdr.version)
    out("activation: %s" % _when(hdr.activation))
    out("created: %s" % _when(hdr.created))
    out("length: %d bytes" % hdr.total_len)
    cfg = bundle.read_config(f, hdr)
    if cfg is None:
        out("config: none (the active one is kept)")
    else:
        fares = cfg.get("fares", {})
        routes = fares.get("routes", {})
        out("settings: %s" % json.dumps(cfg.get("settings", {}), sort_keys=True))
        wl = cfg.get("whitelist", {})
        out(
            "whitelist: local issuers %s, city %s, %d interconnected issuers"
            % (
                ",".join(wl.get("local_issuers", [])),
                wl.get("local_city"),
                len(wl.get("issuers", [])),
            )
        )
        for num in sorted(routes, key=lambda k: int(k)):
            r = routes[num]
            mode = r.get("mode", "flat")
            if mode == "flat":
                out("route %s: flat %d" % (num, r.get("fare", 0)))
            else:
                out(
                    "route %s: %s, %d stops, fares %s"
                    % (num, mode, len(r.get("stages", [])), r.get("fares"))
                )
        types = fares.get("card_types", {})
        out(
            "card types: %s" % ", ".join("%s=%s" % (k, v.get("name", k)) for k, v in types.items())
        )
        out(
            "time rules: %d, transfer: %s"
            % (len(fares.get("time_rules", [])), fares.get("transfer"))
        )
    delta = bundle.read_delta(f, hdr)
    if delta is not None:
        out(
            "blacklist delta on version %d: %d added, %d removed"
            % (delta[0], len(delta[1]), len(delta[2]))
        )
    sec = hdr.section(bundle.BLACKLIST)
    bl = None
    if sec is not None:
        bl = cardlists.Blacklist(cardlists.FileBlocks(f, sec[0], sec[1]))
        per = sec[1] / bl.count if bl.count else 0.0
        out(
            "blacklist: %d cards, %d bytes, %d blocks of 4096, %.3f bytes/card, k=%d"
            % (bl.count, sec[1], bl.blocks, per, bl.k)
        )
    for card in lookups:
        if bl is None:
            out("lookup %s: no full blacklist in this bundle" % card)
            continue
        dev = cardlists.CountingBlocks(bl.dev)
        bl.dev = dev
        try:
            hit = bl.contains(card)
        except cardlists.ListError as e:
            out("lookup %s: %s" % (card, e))
            continue
        out(
            "lookup %s: %s (%d blocks read)" % (card, "LISTED" if hit else "not listed", dev.reads)
        )
    return hdr


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("bundle")
    ap.add_argument("--key-hex")
    ap.add_argument("--key-file")
    ap.add_argument("--lookup", action="append", default=[], help="card number to look up")
    ap.add_argument("--config", action="store_true", help="print the config section as JSON")
    args = ap.parse_args(argv)
    try:
        key = None
        if args.key_hex:
            key = bytes.fromhex(args.key_hex)
        elif args.key_file:
            key = Path(args.key_file).read_bytes().strip()
        path = Path(args.bundle)
        size = path.stat().st_size
        with open(path, "rb") as f:
            if args.config:
                hdr = bundle.verify_file(f, key, size) if key else None
                if hdr is None:
                    f.seek(0)
                    hdr = bundle._parse_header(f.read(bundle.HEADER), size)
                print(json.dumps(bundle.read_config(f, hdr), indent=2, sort_keys=True))
                return 0
            inspect(f, size, key, args.lookup)
    except bundle.BundleError as e:
        print("params_inspect: refused: %s" % e, file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print("params_inspect: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
