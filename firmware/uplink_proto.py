# The validator <-> back office wire format (docs/protocol.md), one module for both runtimes: the
# uplink on MicroPython builds requests and checks answers, the collector on CPython does the
# reverse. Everything rides in the HTTP body so that a modem's own HTTP stack (which cannot set
# arbitrary headers) carries it unchanged. Both directions end in an HMAC-SHA256 under the
# device's secret over every byte before it.
import hashlib
import struct
import sys

import hmac256

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


VERSION = const(1)
VERSION_EPOCH = const(2)  # the request carries the boot epoch (docs/protocol.md section 3.1)
T_UPLOAD = const(1)
T_PARAMS = const(2)

ST_OK = const(0)
ST_STALE_COUNTER = const(1)  # the answer carries the server's last counter: resend above it

P_NONE = const(0)
P_FULL = const(1)
P_DELTA = const(2)
P_CHUNKED = const(3)  # a big fleet-signed bundle: payload = total u32; fetched by ranges

ENC_RAW = const(0)
ENC_DEFLATE = const(1)

MAC_LEN = const(32)
# Raw deflate windows stay at 1 KiB: the ESP32 needs that much RAM to inflate or deflate.
WBITS = const(10)
MAX_RECORDS = const(1000)
MAX_BODY = const(65536)  # the collector refuses bigger requests (413)
MAX_ANSWER = const(262144)  # a full bundle fits; anything bigger is refused by the uplink
# Payloads under 1 KiB go raw: inflating needs the decompressor's state (about 1.3 KB) and its
# 1 KiB window as two contiguous blocks, more than such a payload saves, and a validator's
# fragmented heap may not have them (docs/runtime.md: a 100-byte delta failed at 104 KB).
DEFLATE_MIN = const(1024)

_REQ = ">2sBBIII"  # magic, version, type, device, counter, device time: 16 bytes
_EPOCH = ">I"  # version 2: the boot epoch follows the 16 bytes
_UP = ">IIHBB"  # acked, first seq, count, record size, encoding: 12 bytes
_PAR = ">I"  # parameter version held
_ANS = ">2sBBBBBBIIIIII"  # 32 bytes, see decode_answer
REQ_LEN = const(16)
UP_LEN = const(12)
ANS_LEN = const(32)
EPOCH_MAX = const(0x7FFFFFFF)  # (epoch, counter) is one signed 64-bit key at the collector
MAGIC_REQ = b"TU"
MAGIC_ANS = b"TA"
# micropython-lib ships a `zlib` shim without compressobj: pick the codec by runtime, not import.
_CPYTHON = sys.implementation.name != "micropython"


class ProtoError(ValueError):
    """A malformed or unauthenticated message: the caller logs it and changes nothing."""


_pads = (None, b"", b"")  # (secret, inner pad, outer pad): one device key, padded once


def mac(secret, data, extra=b""):
    """HMAC-SHA256 (the same as hmac256.hmac_sha256), with the key pads kept between calls: the
    uplink MACs every request and answer under one secret. The cache is one tuple, read and
    replaced whole, so collector threads checking different devices cannot mix pads."""
    global _pads
    pads = _pads
    if pads[0] != secret:
        key = hmac256._pad_key(bytes(secret))
        pads = (bytes(secret), bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key))
        _pads = pads
    inner = hashlib.sha256(pads[1])
    inner.update(data)
    if extra:
        inner.update(extra)
    outer = hashlib.sha256(pads[2])
    outer.update(inner.digest())
    return outer.digest()


def _seal(secret, body, bind=b""):
    # bind: for an answer, the MAC of the request it answers (covered, not sent).
    return bytes(body) + mac(secret, body, bind)


def _open(secret, msg, bind=b""):
    if len(msg) < MAC_LEN:
        raise ProtoError("message shorter than its MAC")
    body = memoryview(msg)[: len(msg) - MAC_LEN]
    if not hmac256.equal(mac(secret, body, bind), msg[len(msg) - MAC_LEN :]):
        raise ProtoError("bad MAC")
    return body


# --- compression -------------------------------------------------------------------------------


def deflate(data):
    """Raw deflate (no header) with a 1 KiB window; None where this runtime cannot compress."""
    if _CPYTHON:
        import zlib

        c = zlib.compressobj(9, zlib.DEFLATED, -WBITS)
        return c.compress(bytes(data)) + c.flush()
    try:
        import io

        import deflate as _d

        out = io.BytesIO()
        w = _d.DeflateIO(out, _d.RAW, WBITS)
        w.write(data)
        w.close()
        return out.getvalue()
    except (ImportError, AttributeError):
        # Builds without MICROPY_PY_DEFLATE_COMPRESS (this unix port) have DeflateIO read-only.
        return None


def can_deflate():
    return deflate(b"x") is not None


def inflate(data, limit):
    """Inverse of deflate(); ProtoError if corrupt or longer than `limit` (no inflate bombs)."""
    if _CPYTHON:
        import zlib

        d = zlib.decompressobj(-15)
        try:
            out = d.decompress(bytes(data), limit + 1)
        except zlib.error as e:
            raise ProtoError("corrupt deflate data: %s" % e)
        if not d.eof and len(out) <= limit:
            raise ProtoError("truncated deflate data")
    else:
        import io

        import deflate as _d

        # In 1 KiB steps: one read(limit) would reserve `limit` bytes of a small heap up front.
        out = bytearray()
        chunk = bytearray(1024)
        try:
            f = _d.DeflateIO(io.BytesIO(data), _d.RAW, WBITS)
            while len(out) <= limit:
                n = f.readinto(chunk)
                if not n:
                    break
                out += memoryview(chunk)[:n]
        except (OSError, ValueError, EOFError) as e:
            raise ProtoError("corrupt deflate data: %s" % e)
        # Left a bytearray: a bytes() copy would need a second contiguous block of the same size.
    if len(out) > limit:
        raise ProtoError("deflate data inflates past %d bytes" % limit)
    return out


# --- requests (validator -> back office) -------------------------------------------------------


def _hlen(epoch):
    return REQ_LEN if epoch is None else REQ_LEN + 4


def _head(buf, kind, device, counter, now, epoch):
    """The request header into buf (None: a new bytes). epoch None: version 1 (no epoch)."""
    if buf is None:
        buf = bytearray(_hlen(epoch))
    ver = VERSION if epoch is None else VERSION_EPOCH
    struct.pack_into(_REQ, buf, 0, MAGIC_REQ, ver, kind, device, counter, now)
    if epoch is not None:
        struct.pack_into(_EPOCH, buf, REQ_LEN, epoch)
    return buf


def upload_len(count, size=64, epoch=None):
    """Bytes of an uncompressed upload of `count` records of `size` bytes."""
    return _hlen(epoch) + UP_LEN + count * size + MAC_LEN


def _check_records(records):
    n = len(records)
    if n > MAX_RECORDS:
        raise ProtoError("too many records for one batch")
    size = len(records[0]) if n else 0
    for r in records:
        if len(r) != size:
            raise ProtoError("records of different sizes")
    return n, size


def encode_upload_into(buf, secret, device, counter, now, floor, first_seq, records, epoch=None):
    """An uncompressed upload built in `buf` (a bytearray of at least upload_len(...) bytes, kept
    by the caller between batches): no large allocation per batch. -> memoryview of the message.
    epoch: the validator's boot epoch (protocol version 2); None sends version 1."""
    n, size = _check_records(records)
    hl = _hlen(epoch)
    end = hl + UP_LEN + n * size
    if len(buf) < end + MAC_LEN:
        raise ProtoError("buffer of %d bytes, need %d" % (len(buf), end + MAC_LEN))
    mv = memoryview(buf)
    _head(buf, T_UPLOAD, device, counter, now, epoch)
    struct.pack_into(_UP, buf, hl, floor, first_seq, n, size, ENC_RAW)
    off = hl + UP_LEN
    for r in records:
        mv[off : off + size] = r
        off += size
    mv[end : end + MAC_LEN] = mac(secret, mv[:end])
    return mv[: end + MAC_LEN]


def encode_upload(
    secret, device, counter, now, floor, first_seq, records, compress=True, epoch=None
):
    """records: equal-size journal records (bytes) with sequence numbers first_seq, first_seq+1,
    ...; floor: see docs/protocol.md. Deflated only when that saves at least an eighth."""
    n, size = _check_records(records)
    if compress and n:
        payload = b"".join(records)
        packed = deflate(payload)
        if packed is not None and len(packed) * 8 < len(payload) * 7:
            head = bytes(_head(None, T_UPLOAD, device, counter, now, epoch))
            head += struct.pack(_UP, floor, first_seq, n, size, ENC_DEFLATE)
            return _seal(secret, head + packed)
    buf = bytearray(upload_len(n, size, epoch))
    return bytes(
        encode_upload_into(buf, secret, device, counter, now, floor, first_seq, records, epoch)
    )


def encode_params(secret, device, counter, now, have_version, epoch=None):
    head = bytes(_head(None, T_PARAMS, device, counter, now, epoch))
    return _seal(secret, head + struct.pack(_PAR, have_version))


def peek_device(msg):
    """The claimed device id, read before authentication to find the secret (ProtoError if the
    header is not even there)."""
    if len(msg) < REQ_LEN + MAC_LEN:
        raise ProtoError("request too short: %d bytes" % len(msg))
    magic, ver, kind, device, _, _ = struct.unpack_from(_REQ, msg, 0)
    if magic != MAGIC_REQ:
        raise ProtoError("not a validator request (magic %r)" % bytes(magic))
    if ver != VERSION and ver != VERSION_EPOCH:
        raise ProtoError("unsupported protocol version %d" % ver)
    if ver == VERSION_EPOCH and len(msg) < REQ_LEN + 4 + MAC_LEN:
        raise ProtoError("request too short: %d bytes" % len(msg))
    return device


def peek_epoch(msg):
    """The request's boot epoch: 0 for version 1 (no epoch). After peek_device()."""
    if msg[2] == VERSION_EPOCH:
        return struct.unpack_from(_EPOCH, msg, REQ_LEN)[0]
    return 0


def check_mac(secret, msg):
    """True when the request's MAC verifies (the collector checks it before anything else)."""
    if len(msg) < MAC_LEN:
        return False
    n = len(msg) - MAC_LEN
    return hmac256.equal(mac(secret, memoryview(msg)[:n]), msg[n:])


def decode_request(secret, msg, max_records=MAX_RECORDS, verified=False):
    """Authenticate and parse a request. -> dict with type, device, counter, time and, for an
    upload: acked, first_seq, records (list of bytes), encoding, wire_payload; for a parameter
    query: have_version. ProtoError on anything malformed. verified: check_mac() said yes already
    (the MAC is not computed twice)."""
    peek_device(msg)
    if verified:
        body = memoryview(msg)[: len(msg) - MAC_LEN]
    else:
        body = _open(secret, msg)
    magic, ver, kind, device, counter, now = struct.unpack_from(_REQ, body, 0)
    epoch = struct.unpack_from(_EPOCH, body, REQ_LEN)[0] if ver == VERSION_EPOCH else 0
    hl = REQ_LEN if ver == VERSION else REQ_LEN + 4
    req = {"type": kind, "device": device, "counter": counter, "time": now, "epoch": epoch}
    req["version"] = ver
    req["mac"] = bytes(msg[len(msg) - MAC_LEN :])  # the answer is bound to it
    if kind == T_UPLOAD:
        if len(body) < hl + UP_LEN:
            raise ProtoError("upload header truncated")
        acked, first, n, size, enc = struct.unpack_from(_UP, body, hl)
        if n > max_records:
            raise ProtoError("batch of %d records exceeds %d" % (n, max_records))
        if n and not size:
            raise ProtoError("zero record size")
        if n and first == 0:
            raise ProtoError("sequence numbers start at 1")
        if n and first + n - 1 > 0xFFFFFFFF:
            raise ProtoError("sequence overflows")
        payload = bytes(body[hl + UP_LEN :])
        want = n * size
        if enc == ENC_DEFLATE:
            payload = inflate(payload, want)
        elif enc != ENC_RAW:
            raise ProtoError("unknown encoding %d" % enc)
        if len(payload) != want:
            raise ProtoError("payload %d bytes, header says %d x %d" % (len(payload), n, size))
        req["acked"] = acked
        req["first_seq"] = first
        req["encoding"] = enc
        req["records"] = [payload[i * size : (i + 1) * size] for i in range(n)]
    elif kind == T_PARAMS:
        if len(body) != hl + 4:
            raise ProtoError("parameter query has %d bytes, want %d" % (len(body), hl + 4))
        req["have_version"] = struct.unpack_from(_PAR, body, hl)[0]
    else:
        raise ProtoError("unknown request type %d" % kind)
    return req


# --- answers (back office -> validator) --------------------------------------------------------


def encode_answer(
    secret,
    kind,
    status,
    device,
    counter,
    server_counter,
    server_time,
    value=0,
    extra=0,
    pkind=P_NONE,
    payload=b"",
    compress=True,
    bind=b"",
    server_epoch=None,
):
    """value: upload -> highest seq held contiguously; params -> bundle version.
    extra: upload -> newest parameter version on offer; params -> delta base version.
    bind: the request's MAC (req["mac"]): the answer's MAC covers it, so an answer recorded for
    an earlier request with the same counter (before a reboot) does not verify.
    server_epoch: the answer to a version 2 request (it carries the back office's epoch after the
    32-byte header); None answers version 1."""
    enc = ENC_RAW
    if compress and len(payload) >= DEFLATE_MIN:
        packed = deflate(payload)
        if packed is not None and len(packed) * 8 < len(payload) * 7:
            payload = packed
            enc = ENC_DEFLATE
    head = struct.pack(
        _ANS,
        MAGIC_ANS,
        VERSION if server_epoch is None else VERSION_EPOCH,
        kind,
        status,
        pkind,
        enc,
        0,
        device,
        counter,
        server_counter,
        server_time,
        value,
        extra,
    )
    if server_epoch is not None:
        head += struct.pack(_EPOCH, server_epoch)
    return _seal(secret, head + payload, bind)


def bundle_token(secret, device, version):
    """The credential of a ranged bundle fetch (GET /v1/bundle/<version>?d=<device>&t=<token>):
    the first 16 bytes of HMAC-SHA256(secret, "TB" | device u32 | version u32), as hex. The
    bytes fetched are fleet-signed; the token only keeps the list to the fleet's devices."""
    return mac(secret, struct.pack(">2sII", b"TB", device, version))[:16].hex()


def request_mac(msg):
    """The MAC at the end of a request we built: decode_answer() needs it."""
    return bytes(msg[len(msg) - MAC_LEN :])


def decode_answer(secret, msg, device, counter, kind, bind=b"", epoch=None):
    """Authenticate an answer to our request (device, counter, kind must match: an old or
    foreign answer is refused). -> dict: status, pkind, server_counter, server_epoch, time, value,
    extra, payload (inflated). ProtoError otherwise. epoch: the request was version 2 (the answer
    must be too, and carries the back office's epoch)."""
    hl = ANS_LEN if epoch is None else ANS_LEN + 4
    if len(msg) < hl + MAC_LEN:
        raise ProtoError("answer too short: %d bytes" % len(msg))
    if len(msg) > MAX_ANSWER:
        raise ProtoError("answer too long: %d bytes" % len(msg))
    body = _open(secret, msg, bind)
    f = struct.unpack_from(_ANS, body, 0)
    if f[0] != MAGIC_ANS or f[1] != (VERSION if epoch is None else VERSION_EPOCH):
        raise ProtoError("not a back-office answer")
    if f[2] != kind or f[7] != device or f[8] != counter:
        raise ProtoError("answer is for another request")
    if f[4] > P_CHUNKED:
        raise ProtoError("unknown parameter answer kind %d" % f[4])
    payload = bytes(body[hl:])
    if f[5] == ENC_DEFLATE:
        payload = inflate(payload, MAX_ANSWER)
    elif f[5] != ENC_RAW:
        raise ProtoError("unknown encoding %d" % f[5])
    return {
        "status": f[3],
        "pkind": f[4],
        "server_counter": f[9],
        "server_epoch": 0 if epoch is None else struct.unpack_from(_EPOCH, body, ANS_LEN)[0],
        "time": f[10],
        "value": f[11],
        "extra": f[12],
        "payload": payload,
    }
