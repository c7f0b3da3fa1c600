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
#
# Format 2, fleet-signed (docs/parameters.md "Fleet signature"): a signed manifest, then the body.
#   manifest head (64) "TUPM", format 1, key id, 2 pad, version, activation, not before, not
#                       after, created (u32 each, validator time), operator u16, city u16 (BCD),
#                       route u32, group u32 (0 = any), body length, chunk size, chunk count,
#                       12 reserved
#   chunk hashes        SHA-256 of each chunk of the body, 32 bytes each
#   signature (64)      ECDSA P-256 over SHA-256 of everything before it (r || s)
#   body                the header and sections above with format 2 and no MAC
# The signature is checked before any manifest field but the lengths is believed, and every
# chunk against its hash before any body byte is. Offsets a Header of a signed file reports are
# file offsets (manifest included), so the readers below work on both formats.
import hashlib
import json
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import hmac256
import log

# p256 (ECDSA verification) is imported where a key is added or a signature checked: an
# unsigned fleet never holds its module in the heap (docs/runtime.md).

MAGIC = b"TUPB"
FORMAT = const(1)
HEADER = const(160)
MAC_LEN = const(32)
MAX_SECTIONS = const(8)
ALIGN = const(4096)
DELTA_TRAILER = const(36)  # a merged delta's result: card count u32, SHA-256 of its hashes

FORMAT_SIGNED = const(2)
MMAGIC = b"TUPM"
MFORMAT = const(1)
MHEAD = const(64)
HASH_LEN = const(32)
SIG_LEN = const(64)
CHUNK = const(4096)  # default chunk: one flash block, so a verified chunk is one slot block
MAX_CHUNK = const(65536)
MAX_BODY = const(64 * 1024 * 1024)
# Versions are bounded (docs/parameters.md "Rollback"): at most VERSION_MAX, so every version
# fits the protocol's u32 fields with room, and at most MAX_STEP above what a validator holds,
# so no single bundle can push a validator to a version nothing can follow.
VERSION_MAX = const(0x7FFFFFFF)
MAX_STEP = const(1 << 20)

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


def _parse_header(head, size, fmt_want=FORMAT, shift=0):
    """Header of a body of `size` bytes (MAC included for format 1); section offsets are
    reported `shift` bytes further (the manifest in front of a signed body)."""
    if bytes(head[0:4]) != MAGIC:
        raise BundleError("not a bundle (magic %r)" % bytes(head[0:4]))
    fmt, nsect, _, version, activation, created, total = struct.unpack_from(">BBHIIII", head, 4)
    if fmt != fmt_want:
        raise BundleError("bundle format %d where %d was expected" % (fmt, fmt_want))
    if nsect > MAX_SECTIONS:
        raise BundleError("%d sections (max %d)" % (nsect, MAX_SECTIONS))
    sections = {}
    end_body = size - (MAC_LEN if fmt == FORMAT else 0)
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
        sections[kind] = (off + shift, length, extra)
    if BLACKLIST in sections and BLDELTA in sections:
        raise BundleError("a bundle carries a full blacklist or a delta, not both")
    return Header(version, activation, created, total + shift, sections)


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


# --- format 2: fleet-signed --------------------------------------------------------------------


class Manifest:
    """The signed manifest's head: version, activation, validity window, scope, body layout."""

    def __init__(self, head):
        if len(head) < MHEAD or bytes(head[0:4]) != MMAGIC:
            raise BundleError("not a signed manifest")
        f = struct.unpack_from(">BB2xIIIIIHHIIIII", head, 4)
        if f[0] != MFORMAT:
            raise BundleError("unknown manifest format %d" % f[0])
        self.key_id = f[1]
        self.version = f[2]
        self.activation = f[3]
        self.not_before = f[4]
        self.not_after = f[5]
        self.created = f[6]
        self.operator = f[7]
        self.city = f[8]
        self.route = f[9]
        self.group = f[10]
        self.body_len = f[11]
        self.chunk = f[12]
        self.n_chunks = f[13]
        if not 0 < self.chunk <= MAX_CHUNK or self.chunk % 512:
            raise BundleError("chunk size %d" % self.chunk)
        if not HEADER <= self.body_len <= MAX_BODY:
            raise BundleError("body length %d" % self.body_len)
        if self.n_chunks != (self.body_len + self.chunk - 1) // self.chunk:
            raise BundleError("%d chunks do not cover %d bytes" % (self.n_chunks, self.body_len))
        self.signed_len = MHEAD + HASH_LEN * self.n_chunks  # what the signature covers
        self.len = self.signed_len + SIG_LEN  # the manifest's bytes in front of the body
        self.total = self.len + self.body_len

    def chunk_span(self, i):
        """(offset in the file, length) of chunk i."""
        off = i * self.chunk
        return self.len + off, min(self.chunk, self.body_len - off)

    def scope(self):
        return "operator %d city %04x route %d group %d" % (
            self.operator,
            self.city,
            self.route,
            self.group,
        )


class Trust:
    """What a validator believes: fleet public keys by id (current and next) and its own scope.

    keys: {key_id: 65-byte uncompressed P-256 point}; key_floor: ids below it are retired
    (a bundle signed by a newer key retires the older ones); scope: operator, city (BCD as a
    4-digit string or an int), route, groups (the device groups it belongs to)."""

    def __init__(self, keys=None, operator=0, city=0, route=0, groups=(), key_floor=0):
        self.keys = {}
        for kid, raw in (keys or {}).items():
            self.add_key(kid, raw)
        self.operator = operator
        self.city = int(city, 16) if isinstance(city, str) else city
        self.route = route
        self.groups = tuple(groups)
        self.key_floor = key_floor

    def add_key(self, kid, raw):
        kid = int(kid)
        if isinstance(raw, str):
            raw = bytes.fromhex(raw)
        if not 0 < kid < 256:
            raise BundleError("key id %d outside 1..255" % kid)
        import p256

        try:
            self.keys[kid] = p256.public_key(raw)
        except ValueError as e:
            raise BundleError("key %d: %s" % (kid, e))

    def signed_mode(self):
        return bool(self.keys)

    def check_scope(self, m):
        if m.operator and m.operator != self.operator:
            raise BundleError(
                "out of scope: operator %d, this validator %d" % (m.operator, self.operator)
            )
        if m.city and m.city != self.city:
            raise BundleError("out of scope: city %04x, this validator %04x" % (m.city, self.city))
        if m.route and m.route != self.route:
            raise BundleError("out of scope: route %d, this validator %d" % (m.route, self.route))
        if m.group and m.group not in self.groups:
            raise BundleError("out of scope: device group %d" % m.group)


def read_manifest_head(f):
    head = bytearray(MHEAD)
    f.seek(0)
    if f.readinto(head) != MHEAD:
        raise BundleError("truncated manifest")
    return Manifest(head)


def verify_manifest(f, size, trust, now, buf):
    """Check the manifest at the start of `f` (signature, key, scope, window); -> Manifest.
    `size` is the file's length or None when only the manifest is there yet (a download)."""
    m = read_manifest_head(f)
    if size is not None and size != m.total:
        raise BundleError("length %d, manifest says %d (truncated or padded)" % (size, m.total))
    if m.key_id not in trust.keys:
        raise BundleError("signed by unknown key %d" % m.key_id)
    if m.key_id < trust.key_floor:
        raise BundleError(
            "signed by retired key %d (keys from %d on)" % (m.key_id, trust.key_floor)
        )
    h = hashlib.sha256()
    mv = memoryview(buf)
    f.seek(0)
    left = m.signed_len
    while left > 0:
        n = f.readinto(mv if left >= len(buf) else mv[:left])
        if not n:
            raise BundleError("manifest ended early")
        h.update(mv[:n])
        left -= n
    sig = bytearray(SIG_LEN)
    if f.readinto(sig) != SIG_LEN:
        raise BundleError("truncated signature")
    import p256

    if not p256.verify_digest(trust.keys[m.key_id], h.digest(), sig):
        raise BundleError("bad signature (tampered, or not signed by key %d)" % m.key_id)
    trust.check_scope(m)
    if not 0 < m.version <= VERSION_MAX:
        raise BundleError("version %d outside 1..%d" % (m.version, VERSION_MAX))
    if now is not None:
        if m.not_before and now < m.not_before:
            raise BundleError("not valid before %d (now %d)" % (m.not_before, now))
        if m.not_after and now > m.not_after:
            raise BundleError("expired at %d (now %d)" % (m.not_after, now))
    return m


def chunk_ok(f, m, i, buf, data=None):
    """True when chunk i (read from `f`, or given as `data`) matches its manifest hash."""
    want = bytearray(HASH_LEN)
    f.seek(MHEAD + HASH_LEN * i)
    if f.readinto(want) != HASH_LEN:
        return False
    h = hashlib.sha256()
    if data is not None:
        h.update(data)
    else:
        off, length = m.chunk_span(i)
        mv = memoryview(buf)
        f.seek(off)
        while length > 0:
            n = f.readinto(mv if length >= len(buf) else mv[:length])
            if not n:
                return False
            h.update(mv[:n])
            length -= n
    return h.digest() == want


def verify_signed_file(f, size, trust, now=None, buf=None):
    """Check a fleet-signed bundle file of `size` bytes; -> (Manifest, Header) or BundleError.
    Signature first, then every chunk, then the body header."""
    if buf is None:
        buf = bytearray(1024)
    m = verify_manifest(f, size, trust, now, buf)
    for i in range(m.n_chunks):
        if not chunk_ok(f, m, i, buf):
            raise BundleError("chunk %d does not match its hash (tampered)" % i)
    hdr = signed_header(f, m)
    return m, hdr


def signed_header(f, m):
    """The body header of a signed file whose manifest is `m` (offsets are file offsets)."""
    head = bytearray(HEADER)
    f.seek(m.len)
    if f.readinto(head) != HEADER:
        raise BundleError("truncated header")
    hdr = _parse_header(head, m.body_len, FORMAT_SIGNED, m.len)
    if hdr.version != m.version or hdr.activation != m.activation:
        raise BundleError("body version or activation differs from the manifest")
    return hdr


def file_header(f, size):
    """The Header of an already verified file of either format (offsets are file offsets)."""
    magic = bytearray(4)
    f.seek(0)
    f.readinto(magic)
    if bytes(magic) == MMAGIC:
        return signed_header(f, read_manifest_head(f))
    head = bytearray(HEADER)
    f.seek(0)
    if f.readinto(head) != HEADER:
        raise BundleError("truncated header")
    return _parse_header(head, size)


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


def delta_info(f, hdr):
    """The BLDELTA section without its cards (a merged delta may be megabytes): None, or
    (base, n_add, n_rem, cards_offset, result) with result None (an overlay delta) or
    (count, sha256) (a merged delta: docs/blacklist.md "Deltas")."""
    sec = hdr.section(BLDELTA)
    if sec is None:
        return None
    off, length, base = sec
    if length < 8:
        raise BundleError("delta too short")
    n_add, n_rem = struct.unpack_from(">II", _read(f, off, 8), 0)
    plain = 8 + 8 * (n_add + n_rem)
    if length == plain:
        return base, n_add, n_rem, off + 8, None
    if length != plain + DELTA_TRAILER:
        raise BundleError("delta length does not match its counts")
    t = _read(f, off + plain, DELTA_TRAILER)
    return base, n_add, n_rem, off + 8, (struct.unpack_from(">I", t, 0)[0], bytes(t[4:]))


def read_delta(f, hdr):
    """(base_version, adds, removes) from the BLDELTA section, or None (all in RAM: host tools,
    and the device for an overlay delta)."""
    info = delta_info(f, hdr)
    if info is None:
        return None
    base, n_add, n_rem, off, _ = info
    raw = _read(f, off, 8 * (n_add + n_rem))
    cards = [struct.unpack_from(">Q", raw, 8 * i)[0] for i in range(n_add + n_rem)]
    for c in cards:
        if c >= 10**19:
            raise BundleError("delta card number out of range")
    return base, cards[:n_add], cards[n_add:]


# What only the host calls (the builders, the back office's re-signing, the inspector's
# description, bytes-in-memory checks) lives in bundle_build.py: frozen into the firmware like
# every module but never imported on a validator, so its functions take no heap there
# (docs/runtime.md). bundle.build(...) and the rest still work everywhere, through this hook.
_HOST = (
    "build",
    "build_body",
    "resign",
    "manifest_unsigned",
    "verify_bytes",
    "open_bytes",
    "describe",
)


def __getattr__(name):
    if name in _HOST:
        import bundle_build

        return getattr(bundle_build, name)
    raise AttributeError(name)
