"""Uplink protocol (firmware/uplink_proto.py): the back office's answers as the validator reads
them (decode_answer) and the validator's requests as the collector reads them (decode_request),
both re-sealed with the device secret after the damage so the fuzzer works past the MAC on the
header, payload kinds, encodings and deflate streams.

Input: first byte mod 4 picks the mode. 0: the rest is an answer body, sealed (bound to a request
MAC when bit 2 is set); 1: the rest as an answer as it is; 2: a request body, sealed; 3: a
request as it is. Invariants: only ProtoError escapes; an accepted answer matches the request
(device, counter, kind) with a known payload kind and a payload under MAX_ANSWER; an accepted
upload's records are `count` pieces of `size` bytes with sequence numbers in range; unsealed
damage is refused. Afterwards the honest answer and request decode to their honest values.
"""

from tools.fuzz import shim

shim.install()

import uplink_proto as up  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "uplink"
SECRET = b"device-0042-secret"
DEV, CTR = 42, 7
REC = [bytes((i,)) * 64 for i in range(3)]
REQ_UP = up.encode_upload(SECRET, DEV, CTR, 1000, 5, 6, REC)
REQ_UP_RAW = up.encode_upload(SECRET, DEV, CTR, 1000, 5, 6, REC, compress=False)
REQ_PAR = up.encode_params(SECRET, DEV, CTR, 1000, 3)
BIND = up.request_mac(REQ_UP)
ANS = up.encode_answer(SECRET, up.T_UPLOAD, up.ST_OK, DEV, CTR, 9, 2000, value=8, extra=4)
ANS_B = up.encode_answer(SECRET, up.T_UPLOAD, up.ST_OK, DEV, CTR, 9, 2000, value=8, bind=BIND)
ANS_P = up.encode_answer(
    SECRET, up.T_PARAMS, up.ST_OK, DEV, CTR, 9, 2000, 4, 3, up.P_FULL, b"x" * 300
)


def _answer(msg, bind):
    for kind in (up.T_UPLOAD, up.T_PARAMS):
        try:
            a = up.decode_answer(SECRET, msg, DEV, CTR, kind, bind)
        except up.ProtoError:
            continue
        check(a["pkind"] <= up.P_CHUNKED, "payload kind %d" % a["pkind"])
        check(len(a["payload"]) <= up.MAX_ANSWER, "payload of %d bytes" % len(a["payload"]))
        return True
    return False


def _request(msg):
    try:
        r = up.decode_request(SECRET, msg)
    except up.ProtoError:
        return False
    check(r["device"] == DEV or r["device"] == up.peek_device(msg), "device")
    if r["type"] == up.T_UPLOAD:
        recs = r["records"]
        if recs:
            size = len(recs[0])
            check(size > 0 and all(len(x) == size for x in recs), "record sizes")
            check(1 <= r["first_seq"] and r["first_seq"] + len(recs) - 1 <= 0xFFFFFFFF, "seq")
        check(len(recs) <= up.MAX_RECORDS, "batch of %d" % len(recs))
    else:
        check(r["type"] == up.T_PARAMS and isinstance(r["have_version"], int), "params")
    return True


def one_input(data):
    if not data:
        return
    mode, rest = data[0] & 3, bytes(data[1:])
    bind = BIND if data[0] & 4 else b""
    if mode == 0:
        _answer(up._seal(SECRET, rest, bind), bind)
    elif mode == 1:
        ok = _answer(rest, bind)
        check(not ok or rest in (ANS, ANS_B, ANS_P), "unsealed answer accepted")
    elif mode == 2:
        _request(up._seal(SECRET, rest))
    else:
        ok = _request(rest)
        check(not ok or rest in (REQ_UP, REQ_UP_RAW, REQ_PAR), "unsealed request accepted")
    a = up.decode_answer(SECRET, ANS_B, DEV, CTR, up.T_UPLOAD, BIND)
    check((a["status"], a["value"], a["server_counter"]) == (0, 8, 9), "honest answer")
    r = up.decode_request(SECRET, REQ_UP)
    check(r["records"] == REC and r["first_seq"] == 6 and r["acked"] == 5, "honest request")


SEEDS = (
    b"\x00" + ANS[: -up.MAC_LEN],
    b"\x04" + ANS_B[: -up.MAC_LEN],
    b"\x00" + ANS_P[: -up.MAC_LEN],
    b"\x01" + ANS,
    b"\x05" + ANS_B,
    b"\x02" + REQ_UP[: -up.MAC_LEN],
    b"\x02" + REQ_UP_RAW[: -up.MAC_LEN],
    b"\x02" + REQ_PAR[: -up.MAC_LEN],
    b"\x03" + REQ_UP,
    b"\x03" + REQ_PAR,
)
