# The transaction record: 64 bytes, big-endian, CRC-32 at the end. One module for both runtimes:
# the journal writes it on the validator, the collector and tools/journal_decode.py read it on a
# host. The byte-by-byte layout is in docs/record-format.md; change VERSION when it changes.
from crc import crc32

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


SIZE = const(64)
VERSION = const(1)
_CRC_AT = const(60)

# Kinds
PURCHASE = const(1)
PURCHASE_RECOVERED = const(2)  # booked after tearing (re-tap proof or pending promoted at boot)
REFUSED = const(3)  # a refused tap worth keeping: blacklist hit, card locked, ...; see `reason`
PARAM_ACTIVATION = const(4)
CLOCK_CHANGE = const(5)
BOOT = const(6)
JOURNAL_EVENT = const(7)  # the journal's own notes (wipe, records cut after corruption)
# Written before DEBIT with every field the purchase will book but the TAC. Until a PURCHASE,
# PURCHASE_RECOVERED or DEBIT_VOID with the same card_no and card_atc follows, it is an
# unconfirmed debit: the card may or may not have been debited.
DEBIT_INTENT = const(8)
DEBIT_VOID = const(9)  # closes an intent: the card did not execute that DEBIT (see `reason`)

KIND_NAMES = {
    PURCHASE: "purchase",
    PURCHASE_RECOVERED: "purchase_recovered",
    REFUSED: "refused",
    PARAM_ACTIVATION: "param_activation",
    CLOCK_CHANGE: "clock_change",
    BOOT: "boot",
    JOURNAL_EVENT: "journal_event",
    DEBIT_INTENT: "debit_intent",
    DEBIT_VOID: "debit_void",
}
# The kinds that close an open DEBIT_INTENT of the same (card_no, card_atc).
OUTCOME_KINDS = (PURCHASE, PURCHASE_RECOVERED, DEBIT_VOID)

# Flags (bit mask)
FLAG_MAC2_UNVERIFIED = const(0x01)  # recovered purchase whose MAC2 the PSAM did not check
FLAG_TAC_MISSING = const(0x02)  # recovered purchase without a TAC (GET TRANSACTION PROVE failed)
FLAG_CLOCK_UNSET = const(0x04)  # time came from an unsynchronised clock
FLAG_TEST = const(0x08)  # bench or simulation record, never settled
FLAG_APP_LOCKED = const(0x10)  # refused record: this tap locked the card's application

# The `reason` byte of DEBIT_INTENT, PURCHASE and PURCHASE_RECOVERED records: the validator's
# UTC offset when it sold, in quarter hours, plus TZ_BASE (0: not recorded, older firmware). The
# card's TAC covers the local date and time the validator sent; clearing recomputes them from
# `time` and this offset, whatever its own time zone (docs/record-format.md).
TZ_BASE = const(128)


def tz_code(tz_seconds):
    """The `reason` byte for a validator at this UTC offset (seconds, whole quarter hours)."""
    q = tz_seconds // 900
    if q * 900 != tz_seconds or not -48 <= q <= 56:
        raise RecordError("tz %d s is not a UTC offset in quarter hours" % tz_seconds)
    return TZ_BASE + q


def tz_of(code):
    """The UTC offset in seconds a `reason` byte of a sale records, None when not recorded."""
    if not TZ_BASE - 48 <= code <= TZ_BASE + 56:
        return None
    return (code - TZ_BASE) * 900


# Refusal reasons (the `reason` byte of REFUSED records, 0 otherwise)
REASON_BLACKLIST = const(1)
REASON_LOCKED = const(2)
REASON_EXPIRED = const(3)
REASON_NOT_WHITELISTED = const(4)
REASON_INSUFFICIENT = const(5)
REASON_NOT_ENABLED = const(6)
REASON_OTHER = const(255)

# (name, offset, width, is_bytes): integer fields are unsigned big-endian, byte fields raw.
FIELDS = (
    ("version", 0, 1, False),
    ("kind", 1, 1, False),
    ("flags", 2, 1, False),
    ("card_type", 3, 1, False),
    ("txn_type", 4, 1, False),
    ("fare_rule", 5, 1, False),
    ("seq", 6, 4, False),
    ("time", 10, 4, False),
    ("psam_tid", 14, 6, True),
    ("psam_serial", 20, 4, False),
    ("card_no", 24, 10, True),
    ("issuer", 34, 4, True),
    ("amount", 38, 3, False),
    ("balance_before", 41, 3, False),
    ("balance_after", 44, 3, False),
    ("card_atc", 47, 2, False),
    ("tac", 49, 4, True),
    ("route", 53, 2, False),
    ("stop", 55, 2, False),
    ("discount", 57, 2, False),
    ("reason", 59, 1, False),
    ("crc32", 60, 4, False),
)
_SEQ_AT = const(6)
_KIND_AT = const(1)


class RecordError(ValueError):
    pass


# encode_into() is on the purchase's hot path: the CRC needs a 60-byte view of the caller's buffer,
# and making one allocates, so the view of the last buffer used is kept.
_view_of = None
_view = None


def _head(buf):
    global _view_of, _view
    if _view_of is not buf:
        _view = memoryview(buf)[:_CRC_AT]
        _view_of = buf
    return _view


def _get_int(buf, off, width):
    value = 0
    for i in range(off, off + width):
        value = (value << 8) | buf[i]
    return value


def encode_into(buf, fields, seq):
    """Fill the first SIZE bytes of `buf` (a bytearray) from `fields`; no allocation.

    Keys not in `fields` are written as 0; `version`, `seq` and `crc32` are set here, not taken
    from `fields`. Raises RecordError on a value that does not fit (buf is then undefined).
    Integers go in with struct.pack_into and byte fields as one slice: no loop per byte (the
    purchase's hot path), no shift of a long integer (a CRC on a 32-bit board)."""
    import struct  # here, not a module global: this module's dict stays as small as it was

    if len(buf) < SIZE:
        raise RecordError("buffer of %d bytes, need %d" % (len(buf), SIZE))
    for name, off, width, is_bytes in FIELDS:
        if off == 0:
            buf[0] = VERSION
            continue
        if off == _CRC_AT:
            break
        v = seq if off == _SEQ_AT else fields.get(name, 0)
        if is_bytes:
            if isinstance(v, int) and v == 0:  # missing byte field
                for i in range(off, off + width):
                    buf[i] = 0
                continue
            try:
                n = len(v)
            except TypeError:
                n = -1
            if n != width or isinstance(v, str):
                raise RecordError("field %s: need %d bytes, got %r" % (name, width, v))
            buf[off : off + width] = v
            continue
        if not isinstance(v, int) or v < 0 or v >> (8 * width):
            raise RecordError("field %s: %r is not an unsigned %d-byte integer" % (name, v, width))
        if width == 1:
            buf[off] = v
        elif width == 2:
            struct.pack_into(">H", buf, off, v)
        elif width == 4:
            struct.pack_into(">I", buf, off, v)
        else:  # 3
            buf[off] = v >> 16
            struct.pack_into(">H", buf, off + 1, v & 0xFFFF)
    struct.pack_into(">I", buf, _CRC_AT, crc32(_head(buf)))
    return buf


def encode(fields, seq):
    """Record bytes for `fields` (a dict; missing keys are 0) with sequence number `seq`."""
    buf = bytearray(SIZE)
    encode_into(buf, fields, seq)
    return bytes(buf)


def valid(buf):
    """True when `buf` holds SIZE bytes with a good CRC and a known version (cheap, no dict)."""
    if len(buf) != SIZE:
        return False
    return buf[0] == VERSION and crc32(memoryview(buf)[:_CRC_AT]) == _get_int(buf, _CRC_AT, 4)


def seq_of(buf):
    """The sequence number of an encoded record (not checked: call valid() first)."""
    return _get_int(buf, _SEQ_AT, 4)


def kind_of(buf):
    return buf[_KIND_AT]


def decode(buf):
    """dict of every field (byte fields as bytes); RecordError on bad length, version or CRC."""
    if len(buf) != SIZE:
        raise RecordError("record of %d bytes, need %d" % (len(buf), SIZE))
    if buf[0] != VERSION:
        raise RecordError("unknown record version %d" % buf[0])
    stored = _get_int(buf, _CRC_AT, 4)
    computed = crc32(memoryview(buf)[:_CRC_AT])
    if stored != computed:
        raise RecordError("bad CRC %08x, computed %08x" % (stored, computed))
    out = {}
    for name, off, width, is_bytes in FIELDS:
        if is_bytes:
            out[name] = bytes(buf[off : off + width])
        else:
            out[name] = _get_int(buf, off, width)
    return out


def kind_name(kind):
    return KIND_NAMES.get(kind, "kind%d" % kind)
