"""record.py under CPython: the layout checked against an independent struct/zlib packing."""

import struct
import zlib

import pytest
import record
from hypothesis import given
from hypothesis import strategies as st

U = st.integers


def _u24(v):
    return v.to_bytes(3, "big")


fields_st = st.fixed_dictionaries(
    {
        "kind": U(0, 255),
        "flags": U(0, 255),
        "card_type": U(0, 255),
        "txn_type": U(0, 255),
        "fare_rule": U(0, 255),
        "time": U(0, 2**32 - 1),
        "psam_tid": st.binary(min_size=6, max_size=6),
        "psam_serial": U(0, 2**32 - 1),
        "card_no": st.binary(min_size=10, max_size=10),
        "issuer": st.binary(min_size=4, max_size=4),
        "amount": U(0, 2**24 - 1),
        "balance_before": U(0, 2**24 - 1),
        "balance_after": U(0, 2**24 - 1),
        "card_atc": U(0, 65535),
        "tac": st.binary(min_size=4, max_size=4),
        "route": U(0, 65535),
        "stop": U(0, 65535),
        "discount": U(0, 65535),
        "reason": U(0, 255),
    }
)


def reference_pack(f, seq):
    head = (
        struct.pack(
            ">BBBBBBII6sI10s4s",
            1,
            f["kind"],
            f["flags"],
            f["card_type"],
            f["txn_type"],
            f["fare_rule"],
            seq,
            f["time"],
            f["psam_tid"],
            f["psam_serial"],
            f["card_no"],
            f["issuer"],
        )
        + _u24(f["amount"])
        + _u24(f["balance_before"])
        + _u24(f["balance_after"])
        + struct.pack(
            ">H4sHHHB", f["card_atc"], f["tac"], f["route"], f["stop"], f["discount"], f["reason"]
        )
    )
    assert len(head) == 60
    return head + struct.pack(">I", zlib.crc32(head))


@given(fields_st, U(0, 2**32 - 1))
def test_layout_matches_independent_packing(f, seq):
    got = record.encode(f, seq)
    assert got == reference_pack(f, seq)
    d = record.decode(got)
    assert {k: d[k] for k in f} == f
    assert d["seq"] == seq and d["crc32"] == zlib.crc32(got[:60])


@given(fields_st, U(0, 2**32 - 1), U(0, 63), U(0, 7))
def test_any_bit_flip_is_rejected(f, seq, pos, bit):
    bad = bytearray(record.encode(f, seq))
    bad[pos] ^= 1 << bit
    assert not record.valid(bytes(bad))
    with pytest.raises(record.RecordError):
        record.decode(bytes(bad))


@given(st.binary(max_size=80))
def test_random_bytes_never_crash_decode(data):
    try:
        d = record.decode(data)
    except record.RecordError:
        return
    assert record.encode(d, d["seq"]) == data  # only a genuine record gets through


def test_bytearray_and_memoryview_decode_alike():
    raw = record.encode({"kind": record.REFUSED, "reason": record.REASON_BLACKLIST}, 3)
    assert record.decode(bytearray(raw)) == record.decode(memoryview(raw)) == record.decode(raw)
