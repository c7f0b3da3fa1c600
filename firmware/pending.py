# The pending-purchase blob of releases before the one-log purchase (issue 14), kept only so that
# txlog_migrate can read what an older release left in the littlefs journal (journal.PendingStore)
# and turn each entry into an open DEBIT_INTENT. The purchase no longer writes it: its pending set
# is the transaction log's open intents (docs/purchase.md).
#
# Blob: b"PD" | version 1 | count 1 | count x ENTRY bytes | CRC-32 of everything before (4).
import struct

from crc import crc32

MAGIC = b"PD"
VERSION = 1
MAX_ENTRIES = 4
# card_no 10 | issuer 4 | card_type | txn_type | atc 2 | amount 4 | balance_before 4 |
# psam serial 4 | time 4 | route 2 | stop 2 | fare_rule 1 | discount 2 | terminal 6 | datetime 7
_FMT = ">10s4sBBHIIIIHHBH6s7s"
ENTRY = struct.calcsize(_FMT)
_FIELDS = (
    "card_no",
    "issuer",
    "card_type",
    "txn_type",
    "atc",
    "amount",
    "balance_before",
    "psam_serial",
    "time",
    "route",
    "stop",
    "fare_rule",
    "discount",
    "psam_tid",
    "datetime",
)


class PendingError(ValueError):
    pass


def encode(entries):
    if len(entries) > MAX_ENTRIES:
        raise PendingError("too many pending purchases")
    out = bytearray(MAGIC)
    out.append(VERSION)
    out.append(len(entries))
    for e in entries:
        out += struct.pack(_FMT, *[e[k] for k in _FIELDS])
    c = crc32(out)
    out += struct.pack(">I", c)
    return bytes(out)


def decode(blob):
    """-> list of entry dicts; PendingError on a damaged blob (the caller logs and keeps going)."""
    if blob is None:
        return []
    if len(blob) < 8 or blob[0:2] != MAGIC or blob[2] != VERSION:
        raise PendingError("not a pending-purchase blob")
    n = blob[3]
    if n > MAX_ENTRIES or len(blob) != 4 + n * ENTRY + 4:
        raise PendingError("pending blob of %d bytes for %d entries" % (len(blob), n))
    if crc32(blob[:-4]) != struct.unpack(">I", blob[-4:])[0]:
        raise PendingError("pending blob CRC mismatch")
    out = []
    for i in range(n):
        values = struct.unpack_from(_FMT, blob, 4 + i * ENTRY)
        out.append(dict(zip(_FIELDS, values)))
    return out
