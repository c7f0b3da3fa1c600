# mpy: heapsize=64k timeout=60
# The 64-byte transaction record under MicroPython: round trip, defaults, every rejection path,
# and the hot-path encode_into() that must not allocate.
import gc

import mptest
import record

SAMPLE = {
    "kind": record.PURCHASE,
    "flags": record.FLAG_MAC2_UNVERIFIED,
    "card_type": 0x01,
    "txn_type": 0x09,
    "fare_rule": 7,
    "time": 0x3456789A,
    "psam_tid": b"\x01\x02\x03\x04\x05\x06",
    "psam_serial": 0xA1B2C3D4,
    "card_no": b"\x31\x00\x00\x00\x12\x34\x56\x78\x90\x12",
    "issuer": b"\x31\x00\x00\x00",
    "amount": 200,
    "balance_before": 0xFFFFFF,
    "balance_after": 0xFFFF37,
    "card_atc": 0xBEEF,
    "tac": b"\xde\xad\xbe\xef",
    "route": 65535,
    "stop": 12,
    "discount": 50,
    "reason": 0,
}


def test_size_is_64_and_fields_tile_it():
    mptest.eq(record.SIZE, 64)
    end = 0
    for _name, off, width, _b in record.FIELDS:
        mptest.eq(off, end, "fields are contiguous")
        end = off + width
    mptest.eq(end, record.SIZE)


def test_round_trip_keeps_every_field():
    buf = record.encode(SAMPLE, 0x7FFFFFFE)
    mptest.eq(len(buf), 64)
    d = record.decode(buf)
    for k, v in SAMPLE.items():
        mptest.eq(d[k], v, k)
    mptest.eq(d["seq"], 0x7FFFFFFE)
    mptest.eq(d["version"], record.VERSION)
    mptest.true(record.valid(buf))
    mptest.eq(record.seq_of(buf), 0x7FFFFFFE)
    mptest.eq(record.kind_of(buf), record.PURCHASE)


def test_missing_keys_are_zero_and_seq_argument_wins():
    d = record.decode(record.encode({"kind": record.BOOT, "seq": 99}, 5))
    mptest.eq(d["seq"], 5)
    mptest.eq(d["kind"], record.BOOT)
    mptest.eq(d["amount"], 0)
    mptest.hex_eq(d["card_no"], bytes(10))
    mptest.hex_eq(d["tac"], bytes(4))


def test_values_that_do_not_fit_are_refused():
    for key, bad in (
        ("amount", 1 << 24),
        ("amount", -1),
        ("kind", 256),
        ("route", "12"),
        ("time", 1 << 32),
        ("psam_tid", b"\x01\x02"),
        ("card_no", "3100000012345678901"),
        ("tac", b"\x00" * 5),
        ("issuer", 5),
    ):
        f = dict(SAMPLE)
        f[key] = bad
        e = mptest.raises(record.RecordError, record.encode, f, 1)
        mptest.true(key in str(e), "error names the field: %s" % e)
    mptest.raises(record.RecordError, record.encode, SAMPLE, -1)
    mptest.raises(record.RecordError, record.encode, SAMPLE, 1 << 32)
    mptest.raises(record.RecordError, record.encode_into, bytearray(63), SAMPLE, 1)


def test_decode_rejects_length_version_and_every_single_bit_flip():
    good = record.encode(SAMPLE, 42)
    mptest.raises(record.RecordError, record.decode, good[:-1])
    mptest.raises(record.RecordError, record.decode, good + b"\x00")
    mptest.raises(record.RecordError, record.decode, b"")
    flipped = 0
    for i in range(record.SIZE):
        for bit in range(8):
            bad = bytearray(good)
            bad[i] ^= 1 << bit
            mptest.raises(record.RecordError, record.decode, bad)
            mptest.false(record.valid(bad))
            flipped += 1
    mptest.eq(flipped, 512)
    v2 = bytearray(good)
    v2[0] = 2
    e = mptest.raises(record.RecordError, record.decode, v2)
    mptest.true("version" in str(e))
    mptest.false(record.valid(b"\xff" * 64), "erased flash is not a record")
    mptest.false(record.valid(bytes(64)), "zeroed flash is not a record")


def test_encode_into_matches_encode_and_writes_at_most_64_bytes():
    buf = bytearray(b"\xaa" * 70)
    record.encode_into(buf, SAMPLE, 77)
    mptest.hex_eq(buf[:64], record.encode(SAMPLE, 77))
    mptest.hex_eq(buf[64:], b"\xaa" * 6)


def test_encode_into_does_not_allocate():
    buf = bytearray(record.SIZE)
    fields = dict(SAMPLE)
    record.encode_into(buf, fields, 1)  # first call caches the CRC view of buf
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for seq in range(100):
            record.encode_into(buf, fields, seq)
        used = gc.mem_alloc() - before
    finally:
        gc.enable()
    mptest.log("encode_into: %d bytes allocated over 100 calls" % used)
    mptest.eq(used, 0)


def test_kind_names():
    mptest.eq(record.kind_name(record.PURCHASE_RECOVERED), "purchase_recovered")
    mptest.eq(record.kind_name(200), "kind200")
