"""Compile human-edited parameter sources into a signed bundle (docs/parameters.md).

    python -m tools.params_compile --fares tools/params/example/fares.toml \\
        --whitelist tools/params/example/whitelist.csv \\
        --blacklist tools/params/example/blacklist.csv --key-hex 00112233... -o bundle.bin

A blacklist delta instead of a full list: ``--delta-base V --add add.csv --remove remove.csv``.
The fare table is checked with the validator's own code (firmware/fare.py, params.py) so a
bundle the validator would refuse is never produced. Work that takes over a second shows a
progress bar (a small CSV shows none).

``--port 0`` is the test fixture mode used by tests/mpy/test_cardlists_million.py through the
plugin's ``server=`` directive: it builds (once, cached under build/) a million-card bundle and
an oracle sample, prints ``PORT 0`` and waits to be stopped.
"""

import argparse
import csv
import datetime
import os
import random
import sys
import time
import tomllib
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import blmerge  # noqa: E402
import bundle  # noqa: E402
import cardlists  # noqa: E402
import params  # noqa: E402
import timeutil  # noqa: E402
from tqdm import tqdm  # noqa: E402

from tools import versions  # noqa: E402

EXAMPLE = ROOT / "tools" / "params" / "example"
FIXTURE_DIR = ROOT / "build" / "params-fixture"


class CompileError(ValueError):
    pass


def parse_time(value):
    """Validator seconds from an int or an ISO date-time (with offset; naive = UTC+8)."""
    if isinstance(value, int):
        return value
    if isinstance(value, datetime.datetime):
        dt = value
    else:
        try:
            dt = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            raise CompileError("activation %r is not seconds or an ISO date-time" % (value,))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=8)))
    return int(dt.timestamp()) - timeutil.EPOCH_OFFSET_UNIX


def read_whitelist(path):
    issuers = []
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            code = (row.get("issuer") or "").strip().lower()
            if len(code) != 8 or any(c not in "0123456789abcdef" for c in code):
                raise CompileError("%s line %d: issuer %r is not 8 hex digits" % (path, n, code))
            issuers.append(code)
    return sorted(set(issuers))


def read_cards(path, progress=True):
    """Card numbers (ints) from a CSV whose first column is card_no; errors name the line."""
    cards = []
    size = os.path.getsize(path)
    bar = tqdm(
        total=size, unit="B", unit_scale=True, desc="read " + Path(path).name,
        disable=not progress, file=sys.stderr, delay=1.0,
    )  # fmt: skip

    def lines(f):
        # count bytes as csv consumes lines, for the progress bar
        pending = 0
        for line in f:
            pending += len(line)
            if pending > 1 << 20:
                bar.update(pending)
                pending = 0
            yield line
        bar.update(pending)

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(lines(f))
        header = next(reader, None)
        if not header or header[0].strip() != "card_no":
            raise CompileError("%s: first column must be card_no" % path)
        for n, row in enumerate(reader, start=2):
            if not row or not row[0].strip():
                continue
            try:
                cards.append(cardlists.card_key(row[0].strip()))
            except cardlists.ListError as e:
                raise CompileError("%s line %d: %s" % (path, n, e))
    bar.close()
    return cards


def build_blacklist(cards, progress=True):
    parts = []
    bar = tqdm(
        total=len(cards), desc="blacklist", disable=not progress, file=sys.stderr, delay=1.0
    )
    last = [0]

    def step(n):
        bar.update(n - last[0])
        last[0] = n

    cardlists.build_blacklist(cards, parts.append, step)
    bar.close()
    return b"".join(parts)


def load_sources(fares_path, whitelist_path=None):
    with open(fares_path, "rb") as f:
        try:
            src = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise CompileError("%s: %s" % (fares_path, e))
    cfg = {
        "settings": src.get("settings", {}),
        "whitelist": dict(src.get("whitelist", {})),
        "fares": src.get("fares", {}),
    }
    if whitelist_path:
        cfg["whitelist"]["issuers"] = read_whitelist(whitelist_path)
    try:
        params.check_config(cfg)
    except params.ParamsError as e:
        raise CompileError("%s: %s" % (fares_path, e))
    return src.get("bundle", {}), cfg


def compile_bundle(
    key,
    fares_path,
    whitelist_path=None,
    blacklist_path=None,
    delta=None,
    version=None,
    activation=None,
    progress=True,
    cards=None,
):
    """The bundle bytes. delta = (base_version, add_csv, remove_csv); cards overrides the CSV."""
    meta, cfg = load_sources(fares_path, whitelist_path)
    version = version if version is not None else meta.get("version")
    if not isinstance(version, int) or not 0 < version < 2**32:
        raise CompileError("bundle version must be a positive integer, got %r" % (version,))
    act = parse_time(activation if activation is not None else meta.get("activation", 0))
    if not 0 <= act < 2**32:
        raise CompileError("activation time out of range")
    bl = None
    dl = None
    if delta is not None:
        base, add_path, remove_path = delta[:3]
        base_path = delta[3] if len(delta) > 3 else None
        adds = read_cards(add_path, progress) if add_path else []
        removes = read_cards(remove_path, progress) if remove_path else []
        if base_path:
            # a merged delta (any size): the validator merges it into its free slot and checks
            # the result against the count and digest computed here from the base list
            held = set(read_cards(base_path, progress))
            if set(adds) & held:
                raise CompileError("%d added cards are listed already" % len(set(adds) & held))
            if set(removes) - held:
                raise CompileError("%d removed cards are not listed" % len(set(removes) - held))
            if set(adds) & set(removes):
                raise CompileError("a card both added and removed")
            dl = (base, adds, removes, blmerge.result_digest((held - set(removes)) | set(adds)))
        elif len(set(adds) | set(removes)) > cardlists.OVERLAY_MAX:
            raise CompileError(
                "delta of %d cards exceeds %d: give --base-blacklist (a merged delta) or send a "
                "full list" % (len(set(adds) | set(removes)), cardlists.OVERLAY_MAX)
            )
        else:
            dl = (base, adds, removes)
    else:
        if cards is None:
            cards = read_cards(blacklist_path, progress) if blacklist_path else []
        bl = build_blacklist(cards, progress)
    created = int(time.time()) - timeutil.EPOCH_OFFSET_UNIX
    return bundle.build(key, version, act, cfg, bl, dl, created)


def read_key(args):
    if args.key_hex:
        return bytes.fromhex(args.key_hex)
    if args.key_file:
        return Path(args.key_file).read_bytes().strip()
    raise CompileError("give the device secret with --key-hex or --key-file")


# ---- test fixture: a million-card bundle and an oracle sample -------------------------------

FIXTURE_KEY = b"fixture-device-secret"
FIXTURE_SEED = 20261129


def fixture_cards(count, seed=FIXTURE_SEED):
    rng = random.Random(seed)
    # Realistic structure: a handful of issuer prefixes, sequential-ish serials, some random.
    prefixes = [3104, 2482, 1000, 2900, 3100]
    out = set()
    while len(out) < count:
        p = rng.choice(prefixes)
        out.add(p * 10**15 + rng.randrange(10**15))
    return sorted(out)


def build_delta_fixture(count=1_000_000, n_add=60_000, n_rem=40_000, directory=FIXTURE_DIR):
    """A merged delta of n_add + n_rem cards on the fixture list (version 8 on 7), and an oracle
    of the merged list (card,expected lines): <name>-delta.bnd / -delta.oracle next to it."""
    bnd, _ = build_fixture(count, directory, progress=False)
    out = bnd.with_name(bnd.stem + "-delta.bnd")
    oracle = bnd.with_name(bnd.stem + "-delta.oracle")
    if out.exists() and oracle.exists():
        return out, oracle
    cards = fixture_cards(count)
    held = set(cards)
    rng = random.Random(FIXTURE_SEED + 2)
    removes = rng.sample(cards, n_rem)
    adds = set()
    while len(adds) < n_add:
        c = rng.choice((3104, 2482, 7777)) * 10**15 + rng.randrange(10**15)
        if c not in held:
            adds.add(c)
    adds = sorted(adds)
    result = (held - set(removes)) | set(adds)
    digest = blmerge.result_digest(result)
    data = bundle.build(FIXTURE_KEY, 8, 0, None, None, (7, adds, removes, digest))
    removed = set(removes)
    kept = [c for c in rng.sample(cards, 3000) if c not in removed][:1000]
    sample = [(c, 1) for c in rng.sample(adds, 1000)] + [(c, 0) for c in removes[:1000]]
    sample += [(c, 1) for c in kept]
    rng.shuffle(sample)
    out.with_suffix(".tmp").write_bytes(data)
    oracle.write_text("".join("%d,%d\n" % p for p in sample))
    out.with_suffix(".tmp").rename(out)
    return out, oracle


def link_fixture(delta=False):
    """Build (or reuse) the fixture and link it as million.bnd/.oracle (and million-delta.*)
    under build/params-fixture/, where the MicroPython side finds it."""
    bnd, oracle = build_fixture(progress=False)
    links = [(bnd, FIXTURE_DIR / "million.bnd"), (oracle, FIXTURE_DIR / "million.oracle")]
    if delta:  # tests/mpy/test_params_million_delta.py (tools/params_delta_fixture.py)
        dbnd, doracle = build_delta_fixture()
        links += [
            (dbnd, FIXTURE_DIR / "million-delta.bnd"),
            (doracle, FIXTURE_DIR / "million-delta.oracle"),
        ]
    for src, link in links:
        tmp = link.with_suffix(".lnk")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(src.name)
        tmp.rename(link)


def build_fixture(count=1_000_000, directory=FIXTURE_DIR, progress=True):
    """Build (or reuse) list<count>-<stamp>.bnd and .oracle (card,expected lines)."""
    directory.mkdir(parents=True, exist_ok=True)
    # The cache is keyed by the code that shapes the file, so a format change rebuilds it.
    stamp = 0
    for src in (
        "firmware/cardlists.py",
        "firmware/bundle.py",
        "firmware/blmerge.py",
        "tools/params_compile.py",
    ):
        stamp = zlib.crc32((ROOT / src).read_bytes(), stamp)
    name = "list%d-%08x" % (count, stamp)
    for old in directory.glob("list%d-*" % count):
        if not old.name.startswith(name):
            old.unlink()
    bnd = directory / (name + ".bnd")
    oracle = directory / (name + ".oracle")
    if bnd.exists() and oracle.exists():
        return bnd, oracle
    cards = fixture_cards(count)
    csv_path = directory / (name + ".csv")
    with open(csv_path, "w", encoding="utf-8") as f:
        f.write("card_no\n")
        f.writelines("%019d\n" % c for c in cards)
    data = compile_bundle(
        FIXTURE_KEY,
        EXAMPLE / "fares.toml",
        EXAMPLE / "whitelist.csv",
        csv_path,
        version=7,
        activation=0,
        progress=progress,
    )
    members = set(cards)
    rng = random.Random(FIXTURE_SEED + 1)
    sample = [(c, 1) for c in rng.sample(cards, 3000)]
    while len(sample) < 6000:
        c = rng.choice([rng.randrange(10**19), rng.choice(cards) + rng.choice((-1, 1))])
        if 0 <= c < 10**19 and c not in members:
            sample.append((c, 0))
    rng.shuffle(sample)
    tmp = bnd.with_suffix(".tmp")
    tmp.write_bytes(data)
    oracle.write_text("".join("%d,%d\n" % p for p in sample))
    tmp.rename(bnd)
    csv_path.unlink()
    return bnd, oracle


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.params_compile",
        # the test-fixture paragraph (--port) is for the test plugin, not the user's --help
        description=__doc__.split("``--port 0``")[0].rstrip(),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--fares", default=str(EXAMPLE / "fares.toml"), help="TOML fares/settings")
    ap.add_argument("--whitelist", help="CSV: issuer,name")
    ap.add_argument("--blacklist", help="CSV: card_no,... (full list)")
    ap.add_argument("--delta-base", type=int, help="blacklist version the delta applies on")
    ap.add_argument("--add", help="CSV of cards to add (delta)")
    ap.add_argument("--remove", help="CSV of cards to remove (delta)")
    ap.add_argument(
        "--base-blacklist",
        help="CSV of the list the delta applies on: makes a merged delta of any size "
        '(docs/blacklist.md "Deltas")',
    )
    ap.add_argument(
        "--version",
        type=int,
        help="a check: must equal the TOML's [bundle] version, where the version is set",
    )
    ap.add_argument("--activation", help="seconds since 2000 or ISO date-time")
    ap.add_argument("--key-hex", help="device secret as hex")
    ap.add_argument("--key-file", help="file holding the device secret")
    ap.add_argument("-o", "--out", help="output bundle file")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--port", help=argparse.SUPPRESS)
    versions.add_flag(ap)  # the version set (tools/versions.py)
    args = ap.parse_args(argv)
    if args.port is not None:
        link_fixture()
        print("PORT 0", flush=True)
        time.sleep(3600)  # the plugin terminates the fixture when the test file is done
        return 0
    try:
        key = read_key(args)
        if not args.out:
            raise CompileError("give the output file with -o")
        delta = None
        if args.delta_base is not None:
            if args.blacklist:
                raise CompileError("--blacklist and --delta-base exclude each other")
            delta = (args.delta_base, args.add, args.remove, args.base_blacklist)
        # The bundle's version is set in one place, the TOML's [bundle] version; --version here
        # (and publish's) only checks it (issue 24 point 6).
        toml_version = load_sources(args.fares, None)[0].get("version")
        if args.version is not None and toml_version is not None and args.version != toml_version:
            raise CompileError(
                "--version %d, but %s says version = %d: change [bundle] version in %s "
                "(the version is set there only)"
                % (args.version, args.fares, toml_version, args.fares)
            )
        activation = args.activation
        if activation is not None and activation.isdigit():
            activation = int(activation)
        data = compile_bundle(
            key,
            args.fares,
            args.whitelist,
            args.blacklist,
            delta,
            args.version,
            activation,
            progress=not args.quiet,
        )
    except (CompileError, OSError) as e:
        print("params_compile: error: %s" % e, file=sys.stderr)
        return 2
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.out)
    print("wrote %s (%d bytes)" % (args.out, len(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
