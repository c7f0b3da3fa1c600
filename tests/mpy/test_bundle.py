# mpy: heapsize=1m timeout=120
# Parameter bundles under MicroPython: round trip, cut at every byte, flipped bits, wrong key,
# and well-signed but malformed bundles (what a buggy back office could send).
import struct

import bundle
import cardlists as cl
import hmac256
import log
import mptest

log.set_level(log.DEBUG, echo=False)

KEY = b"device-0001-secret"
CFG = {
    "settings": {"dup_tap_s": 60},
    "whitelist": {"local_issuers": ["05212482"], "local_city": "2482", "issuers": []},
    "fares": {"routes": {"101": {"mode": "flat", "fare": 200}}, "card_types": {"1": {}}},
}
CARDS = [3104991585000011383, 3104895199900000003, 17]

_cache = {}


def full():
    if "full" not in _cache:
        _cache["full"] = bundle.build(KEY, 5, 1000, CFG, cl.blacklist_bytes(CARDS), None, 99)
    return _cache["full"]


def reseal(body):
    """Re-sign a modified bundle body (everything but the MAC) with the right length field."""
    body = bytearray(body)
    struct.pack_into(">I", body, 20, len(body) + bundle.MAC_LEN)
    return bytes(body) + hmac256.hmac_sha256(KEY, body)


def test_round_trip_full_bundle():
    data = full()
    hdr = bundle.verify_bytes(data, KEY)
    mptest.eq((hdr.version, hdr.activation, hdr.created, hdr.total_len), (5, 1000, 99, len(data)))
    f = bundle.open_bytes(data)
    mptest.eq(bundle.read_config(f, hdr), CFG)
    off, length, _ = hdr.section(bundle.BLACKLIST)
    mptest.eq(off % 4096, 0, "blacklist starts on a block")
    bl = cl.Blacklist(cl.FileBlocks(f, off, length))
    for c in CARDS:
        mptest.true(bl.contains(c))
    mptest.false(bl.contains(18))
    mptest.eq(bundle.read_delta(f, hdr), None)
    mptest.true(any("blacklist" in line for line in bundle.describe(hdr)))


def test_round_trip_delta_bundle_without_config():
    data = bundle.build(KEY, 6, 0, None, None, (5, [20, 10], [17]))
    hdr = bundle.verify_bytes(data, KEY)
    f = bundle.open_bytes(data)
    mptest.eq(bundle.read_config(f, hdr), None)
    mptest.eq(bundle.read_delta(f, hdr), (5, [10, 20], [17]))
    mptest.eq(hdr.section(bundle.BLACKLIST), None)


def test_cut_at_every_byte_is_refused():
    data = full()
    for n in range(len(data)):
        e = mptest.raises(bundle.BundleError, bundle.verify_bytes, data[:n], KEY)
        mptest.true("truncated" in str(e), "cut at %d: %s" % (n, e))
    # ...also when the cut bundle's length field is patched to match (MAC no longer does)
    for n in range(bundle.HEADER + bundle.MAC_LEN, len(data), 97):
        cut = bytearray(data[:n])
        struct.pack_into(">I", cut, 20, n)
        mptest.raises(bundle.BundleError, bundle.verify_bytes, bytes(cut), KEY)


def test_flipped_bits_are_refused():
    data = full()
    positions = list(range(0, 700)) + list(range(700, len(data), 41)) + [len(data) - 1]
    for i, pos in enumerate(positions):
        bad = bytearray(data)
        bad[pos] ^= 1 << (i % 8)
        mptest.raises(bundle.BundleError, bundle.verify_bytes, bytes(bad), KEY)


def test_wrong_key_is_refused_and_logged():
    log.clear()
    try:
        bundle.verify_bytes(full(), b"another-device")
    except bundle.BundleError as e:
        mptest.true("MAC" in str(e))
    else:
        raise AssertionError("accepted under the wrong key")


def test_resign_for_another_device():
    other = bundle.resign(full(), b"device-0002-secret")
    mptest.eq(len(other), len(full()))
    mptest.eq(bundle.verify_bytes(other, b"device-0002-secret").version, 5)
    mptest.raises(bundle.BundleError, bundle.verify_bytes, other, KEY)
    mptest.raises(bundle.BundleError, bundle.resign, b"short", KEY)


def test_padded_bundle_is_refused():
    mptest.raises(bundle.BundleError, bundle.verify_bytes, full() + b"\x00", KEY)


def _body():
    return bytearray(full()[: -bundle.MAC_LEN])


def _refused(body, fragment):
    e = mptest.raises(bundle.BundleError, bundle.verify_bytes, reseal(body), KEY)
    mptest.true(fragment in str(e), "%r not in %r" % (fragment, str(e)))


def test_signed_but_malformed_headers_are_refused():
    b = _body()
    b[0:4] = b"XXXX"
    _refused(b, "magic")
    b = _body()
    b[4] = 9
    _refused(b, "format")
    b = _body()
    b[5] = 9
    _refused(b, "sections")
    b = _body()
    b[32] = 77  # section type
    _refused(b, "unknown section")
    b = _body()
    struct.pack_into(">I", b, 32 + 8, 10**6)  # config length far past the end
    _refused(b, "out of bounds")
    b = _body()
    struct.pack_into(">I", b, 32 + 4, 10)  # config starts inside the header
    _refused(b, "out of bounds")
    b = _body()
    struct.pack_into(">I", b, 32 + 16 + 4, 4096 - 8)  # blacklist off its block boundary
    _refused(b, "aligned")
    b = _body()
    b[32 + 16] = bundle.CONFIG  # the same section twice
    _refused(b, "twice")


def test_overlapping_sections_refused():
    data = bundle.build(KEY, 6, 0, CFG, None, (5, [20], []))
    body = bytearray(data[: -bundle.MAC_LEN])
    # point the delta into the config
    off = struct.unpack_from(">I", body, 32 + 4)[0]
    struct.pack_into(">I", body, 32 + 16 + 4, off)
    _refused(body, "overlap")


def test_bad_config_and_delta_bodies_are_refused_after_the_mac():
    data = bundle.build(KEY, 6, 0, CFG, None, (5, [20], [30]))
    hdr = bundle.verify_bytes(data, KEY)
    off, length, _ = hdr.section(bundle.CONFIG)
    body = bytearray(data[: -bundle.MAC_LEN])
    body[off] = ord("[")
    sealed = reseal(body)
    h = bundle.verify_bytes(sealed, KEY)
    mptest.raises(bundle.BundleError, bundle.read_config, bundle.open_bytes(sealed), h)
    doff, dlen, _ = hdr.section(bundle.BLDELTA)
    body = bytearray(data[: -bundle.MAC_LEN])
    struct.pack_into(">I", body, doff, 5)  # counts no longer match the length
    sealed = reseal(body)
    h = bundle.verify_bytes(sealed, KEY)
    e = mptest.raises(bundle.BundleError, bundle.read_delta, bundle.open_bytes(sealed), h)
    mptest.true("length" in str(e))
    body = bytearray(data[: -bundle.MAC_LEN])
    struct.pack_into(">Q", body, doff + 8, 10**19)  # not a 19-digit card number
    sealed = reseal(body)
    h = bundle.verify_bytes(sealed, KEY)
    mptest.raises(bundle.BundleError, bundle.read_delta, bundle.open_bytes(sealed), h)


def test_full_list_and_delta_together_refused():
    bl = cl.empty_blacklist_bytes()
    data = bundle.build(KEY, 7, 0, None, bl, (5, [1], []))
    e = mptest.raises(bundle.BundleError, bundle.verify_bytes, data, KEY)
    mptest.true("not both" in str(e))
