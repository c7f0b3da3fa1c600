# The host side of firmware/bundle.py (docs/parameters.md): building format-1 and format-2
# bundles, re-signing one for another device, a manifest's unsigned head, checks of a bundle
# held in memory and the inspector's description. A validator never imports this module;
# bundle.py hands these names out on first use (bundle.build and so on keep working).
import hashlib
import json
import struct

import hmac256
from bundle import (
    ALIGN,
    BLACKLIST,
    BLDELTA,
    CHUNK,
    CONFIG,
    DELTA_TRAILER,
    FORMAT,
    FORMAT_SIGNED,
    HEADER,
    MAC_LEN,
    MAGIC,
    MFORMAT,
    MHEAD,
    MMAGIC,
    NAMES,
    BundleError,
    Manifest,
    verify_file,
)


def _hash_order(c):
    import cardlists

    return cardlists.mix(c)


def _pad_to(pos, align):
    return (align - pos % align) % align


def build(key, version, activation, config=None, blacklist=None, delta=None, created=0):
    """The bundle as bytes, MAC included (format 1, legacy: signed with one device's secret).

    config: a dict (JSON-able); blacklist: bytes from cardlists.build_blacklist;
    delta: (base_version, adds, removes) with card numbers as ints.
    """
    head, parts = _body(FORMAT, version, activation, config, blacklist, delta, created)
    mac = hmac256.HMAC256(key)
    mac.update(head)
    for p in parts:
        mac.update(p)
    return bytes(head) + b"".join(parts) + mac.digest()


def build_body(version, activation, config=None, blacklist=None, delta=None, created=0):
    """The body of a fleet-signed bundle (format 2: no MAC; the manifest signs it)."""
    head, parts = _body(FORMAT_SIGNED, version, activation, config, blacklist, delta, created)
    return bytes(head) + b"".join(parts)


def _body(fmt, version, activation, config, blacklist, delta, created):
    parts = []
    table = []
    pos = HEADER
    if config is not None:
        body = json.dumps(config).encode()
        table.append((CONFIG, pos, len(body), 0))
        parts.append(body)
        pos += len(body)
    if delta is not None:
        # (base, adds, removes): an overlay delta (at most cardlists.OVERLAY_MAX cards);
        # (base, adds, removes, (count, sha256)): a merged delta of any size, merged on the device
        # into the free slot (firmware/blmerge.py); its cards ascend by hash, and the trailer
        # holds the resulting list's card count and SHA-256 (blmerge.result_digest).
        base, adds, removes = delta[:3]
        merged = len(delta) > 3
        order = _hash_order if merged else None
        adds = sorted(set(adds), key=order)
        removes = sorted(set(removes), key=order)
        body = bytearray(8 + 8 * (len(adds) + len(removes)) + (DELTA_TRAILER if merged else 0))
        struct.pack_into(">II", body, 0, len(adds), len(removes))
        o = 8
        for c in adds + removes:
            struct.pack_into(">Q", body, o, c)
            o += 8
        if merged:
            count, digest = delta[3]
            struct.pack_into(">I", body, o, count)
            body[o + 4 : o + DELTA_TRAILER] = digest
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
    total = pos + (MAC_LEN if fmt == FORMAT else 0)
    head = bytearray(HEADER)
    head[0:4] = MAGIC
    struct.pack_into(">BBHIIII", head, 4, fmt, len(table), 0, version, activation, created, total)
    for i, (kind, off, length, extra) in enumerate(table):
        struct.pack_into(">B3xIII", head, 32 + 16 * i, kind, off, length, extra)
    return head, parts


def resign(data, key):
    """The same bundle signed for another device (the back office keeps one body per version
    and signs it with each validator's secret). The old MAC is not checked here."""
    if len(data) < HEADER + MAC_LEN:
        raise BundleError("truncated: %d bytes" % len(data))
    body = memoryview(data)[: len(data) - MAC_LEN]
    return bytes(body) + hmac256.hmac_sha256(key, body)


def manifest_unsigned(
    body,
    key_id,
    version,
    activation,
    not_before=0,
    not_after=0,
    operator=0,
    city=0,
    route=0,
    group=0,
    chunk=CHUNK,
    created=0,
):
    """Head and chunk hashes of a manifest for `body` (host side); the signer appends r || s."""
    n = (len(body) + chunk - 1) // chunk
    head = bytearray(MHEAD)
    head[0:4] = MMAGIC
    struct.pack_into(
        ">BB2xIIIIIHHIIIII",
        head,
        4,
        MFORMAT,
        key_id,
        version,
        activation,
        not_before,
        not_after,
        created,
        operator,
        city,
        route,
        group,
        len(body),
        chunk,
        n,
    )
    Manifest(head)  # the same checks the validator makes
    out = [bytes(head)]
    for i in range(n):
        out.append(hashlib.sha256(body[i * chunk : (i + 1) * chunk]).digest())
    return b"".join(out)


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
