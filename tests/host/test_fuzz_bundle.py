"""Fuzz (issue 11): parameter bundles under CPython (firmware/bundle.py as the collector and the
tools import it, and tools/params_inspect.py). Bundles *signed with the right key* but with
hypothesis-built section tables (types, offsets, lengths, counts, overlaps, alignment), hostile
delta and config sections, and seeded byte mutations of a real bundle re-signed after the damage.
Invariants: verify_bytes/read_config/read_delta/params_inspect.inspect raise only BundleError
(a ValueError; the inspector may also raise cardlists.ListError for a blacklist section that is
not one, which its command line reports); an accepted header has in-bounds, non-overlapping
sections of known types, at most one blacklist kind, and read_delta returns card numbers below
10**19 with counts that match.
test_params_compile.py already checks that unsigned flips and cuts are refused; the device side
(install on littlefs) is tests/mpy/test_fuzz_params.py. Counts: record_property, `pytest -rP`.
"""

import struct

import bundle
import cardlists
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import fuzzgen, params_inspect

pytestmark = pytest.mark.fuzz

KEY = b"device-0042-secret"
TALLY = fuzzgen.Tally()


def examples(n):
    return settings(
        max_examples=fuzzgen.count(n),
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


def check(data):
    """Every reader over one bundle; returns a word for the tally."""
    try:
        hdr = bundle.verify_bytes(data, KEY)
    except bundle.BundleError:
        return "refused_header"
    spans = sorted((off, off + length) for off, length, _ in hdr.sections.values())
    for (_a, b), (c, _) in zip(spans, spans[1:]):
        assert b <= c, "sections overlap"
    for kind, (off, length, _) in hdr.sections.items():
        assert kind in bundle.NAMES
        assert bundle.HEADER <= off and off + length <= len(data) - bundle.MAC_LEN
    assert not (bundle.BLACKLIST in hdr.sections and bundle.BLDELTA in hdr.sections)
    bundle.describe(hdr)
    f = bundle.open_bytes(data)
    word = "accepted"
    try:
        cfg = bundle.read_config(f, hdr)
        assert cfg is None or isinstance(cfg, dict)
        d = bundle.read_delta(f, hdr)
        if d is not None:
            base, adds, removes = d
            assert all(0 <= c < 10**19 for c in adds + removes)
            off, length, extra = hdr.sections[bundle.BLDELTA]
            assert 8 + 8 * (len(adds) + len(removes)) == length and base == extra
    except bundle.BundleError:
        word = "refused_section"
    lines = []
    try:
        params_inspect.inspect(bundle.open_bytes(data), len(data), KEY, (), lines.append)
    except (bundle.BundleError, cardlists.ListError):
        pass  # a blacklist section that is not one: inspect() says so, its CLI exits 2
    return word


@st.composite
def tables(draw):
    """A signed bundle whose header table and sections are drawn freely."""
    body_len = draw(st.integers(0, 9000))
    n = draw(st.integers(0, 9))
    entries = []
    for _ in range(n):
        kind = draw(st.sampled_from([1, 2, 3, 0, 4, 255]))
        off = draw(st.one_of(st.integers(0, bundle.HEADER + body_len + 40), st.just(4096)))
        length = draw(st.one_of(st.integers(0, body_len + 8), st.just(4096), st.just(2**32 - 1)))
        extra = draw(st.integers(0, 2**32 - 1))
        entries.append((kind, off, length, extra))
    body = bytearray(draw(st.binary(max_size=64)) * (1 + body_len // 64))[:body_len]
    body += bytes(body_len - len(body))
    # Plant plausible section contents where the table points.
    for kind, off, _length, _ in entries:
        rel = off - bundle.HEADER
        if 0 <= rel < body_len:
            if kind == bundle.BLDELTA:
                adds = draw(st.integers(0, 3))
                rem = draw(st.integers(0, 3))
                blob = struct.pack(">II", adds, rem)
                for _ in range(adds + rem):
                    blob += struct.pack(">Q", draw(st.integers(0, 2**64 - 1)))
            elif kind == bundle.CONFIG:
                blob = draw(
                    st.sampled_from(
                        [b'{"a": 1}', b"[1, 2]", b"\xff\xfe", b'{"x": "\\ud800"}', b"nul", b"{}"]
                    )
                )
            else:
                blob = b""
            body[rel : rel + len(blob)] = blob
            del body[body_len:]
    total = bundle.HEADER + body_len + bundle.MAC_LEN
    if draw(st.booleans()):
        total = draw(st.integers(0, 2**32 - 1))
    head = bytearray(bundle.HEADER)
    head[0:4] = draw(st.sampled_from([bundle.MAGIC, bundle.MAGIC, b"TUPA"]))
    fmt = draw(st.sampled_from([1, 1, 1, 0, 2]))
    struct.pack_into(">BBHIIII", head, 4, fmt, n, 0, draw(st.integers(0, 2**32 - 1)), 0, 0, total)
    for i, (kind, off, length, extra) in enumerate(entries[: bundle.MAX_SECTIONS]):
        struct.pack_into(">B3xIII", head, 32 + 16 * i, kind, off, length, extra)
    return bundle.resign(bytes(head) + bytes(body) + bytes(bundle.MAC_LEN), KEY)


def test_signed_bundles_with_drawn_section_tables(record_property):
    tally = fuzzgen.Tally()

    @examples(300)
    @given(data=tables())
    def run(data):
        tally.add(check(data))

    run()
    line = "fuzz bundle_tables hypothesis derandomize=True examples=%d long=%d %s" % (
        tally.total(),
        1 if fuzzgen.long_mode() else 0,
        tally.summary(),
    )
    record_property("fuzz", line)
    print(line)
    assert tally.get("refused_header") > 0


def test_resigned_mutations_of_a_real_bundle(record_property):
    seed = fuzzgen.seed(0x900)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(1500)
    tally = fuzzgen.Tally()
    cfg = {"settings": {"dup_tap_s": 60}, "whitelist": {"local_issuers": ["05212482"]}}
    bases = [
        bundle.build(KEY, 7, 0, cfg, None, (6, [1, 2, 3], [4])),
        bundle.build(KEY, 8, 100, None, None, (7, [], [10**19 - 1])),
        bundle.build(KEY, 9, 0, cfg, bytes(4096)),
    ]
    for i in range(n):
        base = bases[i % len(bases)]
        body = fuzzgen.mutate(rng, base[: -bundle.MAC_LEN])
        if len(body) >= 24 and rng.below(2):  # keep the length field true half the time
            body = body[:20] + struct.pack(">I", len(body) + bundle.MAC_LEN) + body[24:]
        if len(body) >= bundle.HEADER:
            data = bundle.resign(body + bytes(bundle.MAC_LEN), KEY)
        else:
            data = body
        tally.add(check(data))
    line = fuzzgen.report("bundle_resigned", seed, n, tally)
    record_property("fuzz", line)
    print(line)
    assert tally.get("accepted") > 0 and tally.get("refused_header") > 0
