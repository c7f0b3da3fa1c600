"""The wire format of firmware/uplink_proto.py under CPython (the collector's side)."""

import struct
import zlib

import pytest
import uplink_proto as up
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.collector import synth

KEY = bytes(range(32))
OTHER = bytes(32)


def records(n, first=1):
    return [synth.purchase(s) for s in range(first, first + n)]


@pytest.mark.parametrize("compress", [False, True])
def test_upload_round_trip(compress):
    recs = records(40, first=11)
    msg = up.encode_upload(KEY, 77, 5, 123456, 10, 11, recs, compress=compress)
    req = up.decode_request(KEY, msg)
    assert req["type"] == up.T_UPLOAD
    assert (req["device"], req["counter"], req["time"], req["acked"], req["first_seq"]) == (
        77,
        5,
        123456,
        10,
        11,
    )
    assert req["records"] == recs
    assert req["encoding"] == (up.ENC_DEFLATE if compress else up.ENC_RAW)
    if compress:
        assert len(msg) < 40 * 64 * 7 // 8


def test_raw_size_is_header_payload_mac():
    msg = up.encode_upload(KEY, 1, 1, 0, 0, 1, records(3), compress=False)
    assert len(msg) == up.REQ_LEN + up.UP_LEN + 3 * 64 + up.MAC_LEN == 252


def test_incompressible_payload_is_sent_raw():
    import random

    rnd = random.Random(1)
    recs = [rnd.randbytes(64) for _ in range(10)]
    req = up.decode_request(KEY, up.encode_upload(KEY, 1, 1, 0, 0, 1, recs))
    assert req["encoding"] == up.ENC_RAW


def test_heartbeat_has_no_records():
    req = up.decode_request(KEY, up.encode_upload(KEY, 9, 2, 0, 4, 5, []))
    assert req["records"] == [] and req["acked"] == 4


def test_params_round_trip():
    req = up.decode_request(KEY, up.encode_params(KEY, 3, 9, 100, 42))
    assert req["type"] == up.T_PARAMS and req["have_version"] == 42 and req["device"] == 3


def test_wrong_key_and_any_flipped_bit_are_refused():
    msg = up.encode_upload(KEY, 1, 1, 0, 0, 1, records(2))
    with pytest.raises(up.ProtoError, match="MAC"):
        up.decode_request(OTHER, msg)
    for i in range(len(msg)):
        bad = bytearray(msg)
        bad[i] ^= 0x01
        with pytest.raises(up.ProtoError):
            up.decode_request(KEY, bytes(bad))


def test_truncated_requests_are_refused():
    msg = up.encode_upload(KEY, 1, 1, 0, 0, 1, records(2))
    for n in range(len(msg)):
        with pytest.raises(up.ProtoError):
            up.decode_request(KEY, msg[:n])


def _signed(head_and_payload):
    return head_and_payload + up.mac(KEY, head_and_payload)


def test_authenticated_but_inconsistent_bodies_are_refused():
    head = struct.pack(up._REQ, b"TU", 1, up.T_UPLOAD, 1, 1, 0)
    cases = {
        "payload": head + struct.pack(up._UP, 0, 1, 3, 64, 0) + bytes(64 * 2),
        "encoding": head + struct.pack(up._UP, 0, 1, 1, 64, 7) + bytes(64),
        "start at 1": head + struct.pack(up._UP, 0, 0, 1, 64, 0) + bytes(64),
        "exceeds": head + struct.pack(up._UP, 0, 1, 1001, 1, 0) + bytes(1001),
        "deflate": head + struct.pack(up._UP, 0, 1, 1, 64, 1) + b"\xff\xfe\x00",
        "overflows": head + struct.pack(up._UP, 0, 0xFFFFFFFF, 2, 1, 0) + bytes(2),
        "unknown request type": struct.pack(up._REQ, b"TU", 1, 9, 1, 1, 0),
        "parameter query": struct.pack(up._REQ, b"TU", 1, up.T_PARAMS, 1, 1, 0) + b"\x00",
    }
    for reason, body in cases.items():
        with pytest.raises(up.ProtoError, match=reason):
            up.decode_request(KEY, _signed(body))


def test_inflate_bomb_is_refused():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -10)
    packed = bomb.compress(bytes(1 << 20)) + bomb.flush()
    head = struct.pack(up._REQ, b"TU", 1, up.T_UPLOAD, 1, 1, 0)
    body = head + struct.pack(up._UP, 0, 1, 2, 64, up.ENC_DEFLATE) + packed
    with pytest.raises(up.ProtoError, match="inflates past 128"):
        up.decode_request(KEY, _signed(body))


def test_bad_magic_and_version_are_named():
    with pytest.raises(up.ProtoError, match="magic"):
        up.peek_device(b"GET / HTTP/1.1\r\n" + bytes(40))
    msg = bytearray(up.encode_params(KEY, 1, 1, 0, 0))
    msg[2] = 9
    with pytest.raises(up.ProtoError, match="version 9"):
        up.peek_device(bytes(msg))


def test_answer_binds_to_device_counter_and_kind():
    ans = up.encode_answer(KEY, up.T_UPLOAD, up.ST_OK, 5, 10, 10, 777, value=99, extra=3)
    got = up.decode_answer(KEY, ans, 5, 10, up.T_UPLOAD)
    assert (got["status"], got["time"], got["value"], got["extra"]) == (0, 777, 99, 3)
    for device, counter, kind in ((6, 10, 1), (5, 9, 1), (5, 10, 2)):
        with pytest.raises(up.ProtoError, match="another request"):
            up.decode_answer(KEY, ans, device, counter, kind)
    with pytest.raises(up.ProtoError, match="MAC"):
        up.decode_answer(OTHER, ans, 5, 10, up.T_UPLOAD)
    with pytest.raises(up.ProtoError, match="too short"):
        up.decode_answer(KEY, ans[:50], 5, 10, up.T_UPLOAD)


def test_bundle_answer_is_compressed_when_it_pays():
    bundle = b"fare table " * 500
    ans = up.encode_answer(KEY, up.T_PARAMS, 0, 1, 1, 1, 0, 7, 0, up.P_FULL, bundle)
    assert len(ans) < len(bundle) // 4
    got = up.decode_answer(KEY, ans, 1, 1, up.T_PARAMS)
    assert got["payload"] == bundle and got["pkind"] == up.P_FULL and got["value"] == 7


def test_small_payload_goes_raw_even_when_it_would_compress():
    # Inflating needs the decompressor's state and window as two ~1 KB blocks on the validator:
    # a payload under DEFLATE_MIN is not worth that (docs/runtime.md).
    delta = b"\x00" * (up.DEFLATE_MIN - 1)
    ans = up.encode_answer(KEY, up.T_PARAMS, 0, 1, 1, 1, 0, 8, 7, up.P_DELTA, delta)
    assert len(ans) == up.ANS_LEN + len(delta) + up.MAC_LEN  # raw
    got = up.decode_answer(KEY, ans, 1, 1, up.T_PARAMS)
    assert got["payload"] == delta
    ans = up.encode_answer(KEY, up.T_PARAMS, 0, 1, 1, 1, 0, 8, 7, up.P_DELTA, delta + b"\x00")
    assert len(ans) < up.ANS_LEN + 100  # deflated from DEFLATE_MIN on


def test_deflate_is_raw_with_a_small_window():
    data = bytes(range(256)) * 20
    packed = up.deflate(data)
    # Raw deflate (no zlib header) that a 1 KiB-window inflater accepts.
    assert zlib.decompressobj(-up.WBITS).decompress(packed) == data
    assert up.inflate(packed, len(data)) == data
    with pytest.raises(up.ProtoError, match="truncated"):
        up.inflate(packed[: len(packed) // 2], len(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_ever_raise_proto_error(data):
    for msg in (data, b"TU\x01" + data):
        try:
            up.decode_request(KEY, msg)
        except up.ProtoError:
            pass
        try:
            up.decode_answer(KEY, msg, 1, 1, 1)
        except up.ProtoError:
            pass


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(min_size=64, max_size=64), max_size=30),
    st.integers(1, 0xFFFF0000),
    st.integers(0, 0xFFFFFFFF),
    st.booleans(),
)
def test_any_batch_round_trips(recs, first, counter, compress):
    msg = up.encode_upload(KEY, 0xFFFFFFFF, counter, 5, first - 1, first, recs, compress)
    req = up.decode_request(KEY, msg)
    assert req["records"] == recs and req["counter"] == counter and req["first_seq"] == first


def test_mac_matches_the_standard_hmac_when_the_key_changes():
    import hashlib
    import hmac

    for key in (KEY, OTHER, KEY, b"k" * 100, KEY):
        for data in (b"", b"abc", bytes(5000)):
            assert up.mac(key, data) == hmac.new(key, data, hashlib.sha256).digest()


def test_mac_is_right_from_many_threads_with_many_keys():
    # The collector checks devices' MACs in a thread pool: the pad cache must not mix keys.
    import hashlib
    import hmac
    import threading

    keys = [bytes([i]) * 32 for i in range(8)]
    want = {k: hmac.new(k, b"batch", hashlib.sha256).digest() for k in keys}
    wrong = []

    def work(k):
        for _ in range(3000):
            if up.mac(k, b"batch") != want[k]:
                wrong.append(k)

    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: a race shows within the run
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert wrong == []


def test_answer_is_bound_to_the_request_it_answers():
    first = up.decode_request(KEY, up.encode_upload(KEY, 5, 1, 100, 0, 1, records(2)))
    again = up.decode_request(KEY, up.encode_upload(KEY, 5, 1, 200, 0, 1, records(2)))
    assert first["mac"] != again["mac"]  # same device and counter, another request (a reboot)
    ans = up.encode_answer(KEY, up.T_UPLOAD, 0, 5, 1, 1, 0, value=2, bind=first["mac"])
    assert up.decode_answer(KEY, ans, 5, 1, up.T_UPLOAD, first["mac"])["value"] == 2
    with pytest.raises(up.ProtoError, match="bad MAC"):
        up.decode_answer(KEY, ans, 5, 1, up.T_UPLOAD, again["mac"])
    with pytest.raises(up.ProtoError, match="bad MAC"):
        up.decode_answer(KEY, ans, 5, 1, up.T_UPLOAD)


@pytest.mark.parametrize("compress", [False, True])
def test_version_2_carries_the_boot_epoch(compress):
    recs = records(20, first=3)
    msg = up.encode_upload(KEY, 77, 5, 123456, 2, 3, recs, compress=compress, epoch=900)
    assert msg[2] == up.VERSION_EPOCH and up.peek_epoch(msg) == 900
    if not compress:
        assert len(msg) == up.upload_len(20, epoch=900) == up.upload_len(20) + 4
    req = up.decode_request(KEY, msg)
    assert (req["version"], req["epoch"], req["counter"], req["acked"], req["first_seq"]) == (
        2,
        900,
        5,
        2,
        3,
    )
    assert req["records"] == recs
    par = up.decode_request(KEY, up.encode_params(KEY, 77, 6, 0, 41, epoch=900))
    assert (par["version"], par["epoch"], par["have_version"]) == (2, 900, 41)
    # version 1 (older validators) still decodes, with epoch 0
    old = up.decode_request(KEY, up.encode_params(KEY, 77, 6, 0, 41))
    assert (old["version"], old["epoch"], old["have_version"]) == (1, 0, 41)
    # a version 2 header cut before its epoch is malformed
    with pytest.raises(up.ProtoError):
        up.peek_device(msg[:18] + bytes(31))
    with pytest.raises(up.ProtoError):
        up.decode_request(KEY, bytes((0x54, 0x55, 3)) + msg[3:])  # an unknown version


def test_version_2_answers_carry_the_server_epoch_and_do_not_mix_with_version_1():
    ans = up.encode_answer(KEY, up.T_UPLOAD, 1, 5, 10, 4, 777, server_epoch=33)
    assert len(ans) == up.ANS_LEN + 4 + up.MAC_LEN
    got = up.decode_answer(KEY, ans, 5, 10, up.T_UPLOAD, b"", 33)
    assert (got["status"], got["server_epoch"], got["server_counter"]) == (1, 33, 4)
    with pytest.raises(up.ProtoError):
        up.decode_answer(KEY, ans, 5, 10, up.T_UPLOAD)  # we sent version 1: refused
    v1 = up.encode_answer(KEY, up.T_UPLOAD, 0, 5, 10, 10, 777)
    with pytest.raises(up.ProtoError):
        up.decode_answer(KEY, v1, 5, 10, up.T_UPLOAD, b"", 33)
    par = up.encode_answer(
        KEY, up.T_PARAMS, 0, 5, 10, 10, 0, 7, 0, up.P_FULL, b"b" * 300, server_epoch=2
    )
    assert up.decode_answer(KEY, par, 5, 10, up.T_PARAMS, b"", 2)["payload"] == b"b" * 300
