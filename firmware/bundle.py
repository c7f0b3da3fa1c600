# Parameter bundle format (docs/parameters.md), shared by the validator (MicroPython), the
# compiler and inspector (tools/params_*.py) and the collector (CPython).
#
#   header (160 bytes)  magic "TUPB", format 1, section count, version, activation time,
#                       creation time, total length, then up to 8 section entries
#                       (type u8, 3 pad, offset u32, length u32, extra u32)
#   sections            CONFIG (JSON: fares, whitelist, settings), BLACKLIST (cardlists layout,
#                       4096-aligned so its blocks are the file's blocks), BLDELTA (adds and
#                       removes since blacklist version `extra`)
#   HMAC-SHA256         32 bytes under the device secret, over everything before it
# The MAC is checked over the whole file before any field other than the length is believed.
import json
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import hmac256
import log

MAGIC = b"TUPB"
FORMAT = const(1)
HEADER = const(160)
MAC_LEN = const(32)
MAX_SECTIONS = const(8)
ALIGN = const(4096)

CONFIG = const(1)
BLACKLIST = const(2)
BLDELTA = const(3)
NAMES = {CONFIG: "config", BLACKLIST: "blacklist", BLDELTA: "blacklist-delta"}

_log = log.get("bundle")


class BundleError(ValueError):
    pass


class Header:
    def __init__(self, version, activation, created, total_len, sections):
        self.version = version
        self.activation = activation
        self.created = created
        self.total_len = total_len
        self.sections = sections  # type -> (offset, length, extra)

    def section(self, kind):
        return self.sections.get(kind)


def _pad_to(pos, align):
    return (align - pos % align) % align


def build(key, version, activation, config=None, blacklist=None, delta=None, created=0):
    """The bundle as bytes, MAC included.

    config: a dict (JSON-able); blacklist: bytes from cardlists.build_blacklist;
    delta: (base_version, adds, removes) with card numbers as ints.
    """
    parts = []
    table = []
    pos = HEADER
    if config is not None:
        body = json.dumps(config).encode()
        table.append((CONFIG, pos, len(body), 0))
        parts.append(body)
        pos += len(body)
    if delta is not None:
        base, adds, removes = delta
        adds = sorted(set(adds))
        removes = sorted(set(removes))
        body = bytearray(8 + 8 * (len(adds) + len(removes)))
        struct.pack_into(">II", body, 0, len(adds), len(removes))
        o = 8
        for c in adds + removes:
            struct.pack_into(">Q", body, o, c)
            o += 8
        table.append((BLDELTA, pos, len(body), base))
        parts.append(bytes(body))
        pos += len(body)
    if blacklist is not None:
        pad = _pad_to(pos, ALIGN)
        parts.append(bytes(pad))
        pos += pad
        table.append((BLACKLIST, pos, len(blacklist), 0))
        parts.append(blacklist)
        pos += len(blacklist)
    total = pos + MAC_LEN
    head = bytearray(HEADER)
    head[0:4] = MAGIC
    struct.pack_into(
        ">BBHIIII", head, 4, FORMAT, len(table), 0, version, activation, created, total
    )
    for i, (kind, off, length, extra) in enumerate(table):
        struct.pack_into(">B3xIII", head, 32 + 16 * i, kind, off, length, extra)
    mac = hmac256.HMAC256(key)
    mac.update(head)
    for p in parts:
        mac.update(p)
    return bytes(head) + b"".join(parts) + mac.digest()


def resign(data, key):
    """The same bundle signed for another device (the back office keeps one body per version
    and signs it with each validator's secret). The old MAC is not checked here."""
    if len(data) < HEADER + MAC_LEN:
        raise BundleError("truncated: %d bytes" % len(data))
    body = memoryview(data)[: len(data) - MAC_LEN]
    return bytes(body) + hmac256.hmac_sha256(key, body)


def _parse_header(head, size):
    if bytes(head[0:4]) != MAGIC:
        raise BundleError("not a bundle (magic %r)" % bytes(head[0:4]))
    fmt, nsect, _, version, activation, created, total = struct.unpack_from(">BBHIIII", head, 4)
    if fmt != FORMAT:
        raise BundleError("unknown bundle format %d" % fmt)
    if nsect > MAX_SECTIONS:
        raise BundleError("%d sections (max %d)" % (nsect, MAX_SECTIONS))
    sections = {}
    end_body = size - MAC_LEN
    spans = []
    for i in range(nsect):
        kind, off, length, extra = struct.unpack_from(">B3xIII", head, 32 + 16 * i)
        if kind not in NAMES:
            raise BundleError("unknown section type %d" % kind)
        if kind in sections:
            raise BundleError("section %s twice" % NAMES[kind])
        if off < HEADER or off + length > end_body:
            raise BundleError("section %s out of bounds" % NAMES[kind])
        if kind == BLACKLIST and (off % ALIGN or length % ALIGN):
            raise BundleError("blacklist section not block aligned")
        for a, b in spans:
            if off < b and a < off + length:
                raise BundleError("sections overlap")
        spans.append((off, off + length))
        sections[kind] = (off, length, extra)
    if BLACKLIST in sections and BLDELTA in sections:
        raise BundleError("a bundle carries a full blacklist or a delta, not both")
    return Header(version, activation, created, total, sections)


def verify_file(f, key, size, buf=None):
    """Check a bundle file of `size` bytes; return its Header or raise BundleError.

    The MAC over the whole file is checked first; only the length field is read before that.
    `buf` (bytearray, e.g. 1024) is the streaming buffer, reused to keep the heap flat.
    """
    if size < HEADER + MAC_LEN:
        raise BundleError("truncated: %d bytes" % size)
    head = bytearray(HEADER)
    f.seek(0)
    if f.readinto(head) != HEADER:
        raise BundleError("truncated header")
    total = struct.unpack_from(">I", head, 20)[0]
    if total != size:
        raise BundleError("length %d, header says %d (truncated or padded)" % (size, total))
    if buf is None:
        buf = bytearray(1024)
    mv = memoryview(buf)
    mac = hmac256.HMAC256(key)
    mac.update(head)
    left = size - MAC_LEN - HEADER
    while left > 0:
        n = f.readinto(mv if left >= len(buf) else mv[:left])
        if not n:
            raise BundleError("file ended early")
        mac.update(mv[:n])
        left -= n
    want = bytearray(MAC_LEN)
    if f.readinto(want) != MAC_LEN:
        raise BundleError("truncated MAC")
    if not hmac256.equal(mac.digest(), want):
        raise BundleError("MAC mismatch (tampered, or signed for another device)")
    return _parse_header(head, size)


class _Bytes:
    """Minimal seek/readinto over bytes, so bytes and files go through the same checks."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def seek(self, pos):
        self.pos = pos

    def readinto(self, buf):
        n = len(buf)
        chunk = self.data[self.pos : self.pos + n]
        buf[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)

    def read(self, n):
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


def verify_bytes(data, key):
    return verify_file(_Bytes(data), key, len(data))


def open_bytes(data):
    return _Bytes(data)


def _read(f, off, length):
    f.seek(off)
    out = bytearray(length)
    if f.readinto(out) != length:
        raise BundleError("short read")
    return out


def read_config(f, hdr):
    """The CONFIG section as a dict, or None when the bundle has none."""
    sec = hdr.section(CONFIG)
    if sec is None:
        return None
    raw = _read(f, sec[0], sec[1])
    try:
        cfg = json.loads(bytes(raw).decode())
    except (ValueError, UnicodeError) as e:
        raise BundleError("config is not JSON: %s" % e)
    if not isinstance(cfg, dict):
        raise BundleError("config is not an object")
    return cfg


def read_delta(f, hdr):
    """(base_version, adds, removes) from the BLDELTA section, or None."""
    sec = hdr.section(BLDELTA)
    if sec is None:
        return None
    off, length, base = sec
    if length < 8:
        raise BundleError("delta too short")
    raw = _read(f, off, length)
    n_add, n_rem = struct.unpack_from(">II", raw, 0)
    if 8 + 8 * (n_add + n_rem) != length:
        raise BundleError("delta length does not match its counts")
    cards = [struct.unpack_from(">Q", raw, 8 + 8 * i)[0] for i in range(n_add + n_rem)]
    for c in cards:
        if c >= 10**19:
            raise BundleError("delta card number out of range")
    return base, cards[:n_add], cards[n_add:]


def describe(hdr):
    """One line per fact, for the inspector and the log."""
    lines = [
        "version %d" % hdr.version,
        "activation %d" % hdr.activation,
        "created %d" % hdr.created,
        "length %d" % hdr.total_len,
    ]
    for kind in sorted(hdr.sections):
        off, length, extra = hdr.sections[kind]
        line = "section %s at %d, %d bytes" % (NAMES[kind], off, length)
        if kind == BLDELTA:
            line += ", applies on blacklist version %d" % extra
        lines.append(line)
    return lines
