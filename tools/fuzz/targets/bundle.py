"""Parameter bundles (firmware/bundle.py): format-1 bundles whose damaged body is re-signed with
the device key (so the fuzzer works past the MAC on the section table, config and delta
sections), unsigned bytes, and format-2 manifest heads.

Input: first byte mod 3 picks the mode. 0: the rest is a bundle body (header + sections) that
gets its MAC recomputed with KEY; 1: the rest as it is; 2: the rest as a signed manifest's head.
Invariants (as tests/host/test_fuzz_bundle.py): only BundleError escapes (and ListError from the
inspector); an accepted header has in-bounds, non-overlapping sections of known kinds, at most one
blacklist kind; read_config gives a dict or None; read_delta gives card numbers below 10**19 with
counts that match the section length; unsigned damage is refused; an accepted manifest's chunks
cover its body. Afterwards the honest bundle verifies to its honest header.

Params.install_bytes (the device's install into files, with fares/whitelist/blacklist checks)
stays with tests/mpy/test_fuzz_params.py (littlefs) and tests/host/test_params_host.py.
"""

from tools.fuzz import shim

shim.install()

import bundle  # noqa: E402
import cardlists  # noqa: E402

from tools import params_inspect  # noqa: E402
from tools.fuzz.shim import check  # noqa: E402

NAME = "bundle"
KEY = b"device-0042-secret"
CFG = {"settings": {"dup_tap_s": 60}, "whitelist": {"local_issuers": ["05212482"]}}
BASES = (
    bundle.build(KEY, 7, 0, CFG, None, (6, [1, 2, 3], [4])),
    bundle.build(KEY, 8, 100, None, None, (7, [], [10**19 - 1])),
    bundle.build(KEY, 9, 0, CFG, bytes(64)),
)
HONEST = BASES[0]


def _check(data):
    try:
        hdr = bundle.verify_bytes(data, KEY)
    except bundle.BundleError:
        return False
    spans = sorted((off, off + length) for off, length, _ in hdr.sections.values())
    for (_a, b), (c, _) in zip(spans, spans[1:]):
        check(b <= c, "sections overlap")
    for kind, (off, length, _) in hdr.sections.items():
        check(kind in bundle.NAMES, "section kind %r" % kind)
        check(bundle.HEADER <= off and off + length <= len(data) - bundle.MAC_LEN, "bounds")
    check(not (bundle.BLACKLIST in hdr.sections and bundle.BLDELTA in hdr.sections), "2 lists")
    bundle.describe(hdr)
    f = bundle.open_bytes(data)
    try:
        cfg = bundle.read_config(f, hdr)
        check(cfg is None or isinstance(cfg, dict), "config %r" % type(cfg))
        d = bundle.read_delta(f, hdr)
        if d is not None:
            base, adds, removes = d
            check(all(0 <= c < 10**19 for c in adds + removes), "delta card numbers")
            off, length, extra = hdr.sections[bundle.BLDELTA]
            plain = 8 + 8 * (len(adds) + len(removes))
            trailer = bundle.DELTA_TRAILER  # a merged delta's result count and digest
            check(length in (plain, plain + trailer) and base == extra, "delta counts")
    except bundle.BundleError:
        pass
    try:
        params_inspect.inspect(bundle.open_bytes(data), len(data), KEY, (), lambda _: None)
    except (bundle.BundleError, cardlists.ListError):
        pass
    return True


def one_input(data):
    if not data:
        return
    mode, rest = data[0] % 3, bytes(data[1:])
    if mode == 0:
        if len(rest) >= bundle.HEADER:
            rest = bundle.resign(rest + bytes(bundle.MAC_LEN), KEY)
        _check(rest)
    elif mode == 1:
        accepted = _check(rest)
        check(not accepted or rest in BASES, "unsigned bytes accepted")
    else:
        try:
            m = bundle.read_manifest_head(bundle.open_bytes(rest))
        except bundle.BundleError:
            pass
        else:
            check(m.n_chunks * m.chunk >= m.body_len > (m.n_chunks - 1) * m.chunk, "chunks")
            check(m.total == m.len + m.body_len, "manifest total")
            m.scope()
            for i in range(min(m.n_chunks, 4)):
                off, ln = m.chunk_span(i)
                check(off >= m.len and 0 < ln <= m.chunk, "chunk span")
    hdr = bundle.verify_bytes(HONEST, KEY)
    check(hdr.version == 7 and bundle.read_delta(bundle.open_bytes(HONEST), hdr)[0] == 6, "honest")


SEEDS = tuple(b"\x00" + b[: -bundle.MAC_LEN] for b in BASES) + tuple(b"\x01" + b for b in BASES)
SEEDS += (
    b"\x02" + bundle.manifest_unsigned(BASES[0][: -bundle.MAC_LEN], 1, 7, 0)[: bundle.MHEAD],
)
