# First boot after the upgrade from the littlefs journal (firmware/journal.py) to the raw-flash
# transaction log (firmware/txlog.py): the journal's unacknowledged records move into the log
# with their sequence numbers (the back office's contiguous acknowledgement goes on), and each
# pending purchase (the tearing blob the old purchase kept beside the journal) becomes an open
# DEBIT_INTENT: an unconfirmed debit, uploaded and resolved like any other.
#
# Safe against a power cut anywhere, and idempotent: records at or below the log's last number
# are already there; a pending purchase already open in the log (same card, same ATC) is not
# written twice; the old files are deleted only after a marker file says everything is in the
# log, and a run that finds the marker only finishes the deletion. Design: docs/journal.md.
import os
import struct

import log
import record
from crc import crc32

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_log = log.get("migrate")

_BATCH = const(32)
_EIO = const(5)
_MARKER = "migrated"
_PEND_BYTES = const(0x42)
# The pending-purchase blob of the old firmware (its firmware/pending.py): b"PD", version 1,
# count, count x entry, CRC-32 of everything before.
_PD_FMT = ">10s4sBBHIIIIHHBH6s7s"
_PD_FIELDS = (
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


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _is_dir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def decode_pending(blob):
    """The old firmware's pending purchases (list of dicts); ValueError when damaged."""
    size = struct.calcsize(_PD_FMT)
    if len(blob) < 8 or blob[:2] != b"PD" or blob[2] != 1:
        raise ValueError("not a pending-purchase blob")
    n = blob[3]
    if len(blob) != 4 + n * size + 4:
        raise ValueError("pending blob of %d bytes for %d entries" % (len(blob), n))
    if crc32(blob[:-4]) != struct.unpack(">I", blob[-4:])[0]:
        raise ValueError("pending blob CRC mismatch")
    out = []
    for i in range(n):
        values = struct.unpack_from(_PD_FMT, blob, 4 + i * size)
        out.append(dict(zip(_PD_FIELDS, values)))
    return out


def intent_fields(e):
    """DEBIT_INTENT fields for an old pending purchase."""
    bal = e["balance_before"] - e["amount"]
    return {
        "kind": record.DEBIT_INTENT,
        "card_type": e["card_type"],
        "txn_type": e["txn_type"],
        "fare_rule": e["fare_rule"],
        "time": e["time"],
        "psam_tid": e["psam_tid"],
        "psam_serial": e["psam_serial"],
        "card_no": e["card_no"],
        "issuer": e["issuer"],
        "amount": e["amount"],
        "balance_before": e["balance_before"],
        "balance_after": bal if bal >= 0 else 0,
        "card_atc": e["atc"],
        "route": e["route"],
        "stop": e["stop"],
        "discount": e["discount"],
    }


def _booked(j, card_no, atc):
    """True when the old journal holds a purchase of this card at this ATC (the pending entry
    outlived its record: a cut between the two writes)."""
    seq = 0
    while True:
        recs = j.records_after(seq, _BATCH)
        if not recs:
            return False
        for b in recs:
            k = record.kind_of(b)
            if k in (record.PURCHASE, record.PURCHASE_RECOVERED):
                d = record.decode(b)
                if d["card_no"] == card_no and d["card_atc"] == atc:
                    return True
        seq = record.seq_of(recs[-1])


def _rm(path, is_dir=False):
    try:
        if is_dir or _is_dir(path):
            os.rmdir(path)
        else:
            os.remove(path)
        return True
    except OSError as e:
        if e.args and e.args[0] == _EIO:
            raise  # the flash is failing (or the power going): not a leftover to step over
        _log.warning("old journal: %s not removed: %r", path, e)
        return False


def _remove_tree(root):
    # everything but the marker first, the marker last, then the directory. Something that will
    # not go (a foreign subdirectory) is logged and left: the marker stays, the next boot retries
    # and the log is not touched again.
    ok = True
    for sub in (root + "/cur", root):
        if not _is_dir(sub):
            continue
        for entry in list(os.ilistdir(sub)):
            name = entry[0]
            if sub == root and name in (_MARKER, "cur"):
                continue
            ok = _rm(sub + "/" + name) and ok
        if sub != root:
            ok = _rm(sub, True) and ok
    if _exists(root + ".hwm"):
        ok = _rm(root + ".hwm") and ok
    if ok:
        _rm(root + "/" + _MARKER)
        _rm(root, True)


def run(journal_dir, txlog):
    """Move the old journal at journal_dir into `txlog` (a txlog.TxLog), once. Returns None when
    there was nothing to do, else a dict of what moved. Call at boot before any append."""
    root = journal_dir.rstrip("/")
    if not _is_dir(root):
        return None
    if _exists(root + "/" + _MARKER):
        _remove_tree(root)  # a cut during the deletion: finish it
        _log.info("old journal %s removed", root)
        return None
    import journal  # only with an old journal to move: the module costs 2 KB of heap

    j = journal.Journal(root)
    moved = 0
    intents = 0
    stale = 0
    acked = j.acked_seq
    if txlog.last_seq < acked:
        txlog.set_floor(acked + 1, acked)
    seq = txlog.last_seq if txlog.last_seq > acked else acked
    while True:
        recs = j.records_after(seq, _BATCH)
        if not recs:
            break
        for b in recs:
            txlog.adopt(b)
            moved += 1
        seq = record.seq_of(recs[-1])
    # Numbers the old journal issued are never issued again. Its last record kept does not prove
    # that: whole records cut from the end of its newest segment leave no trace, and one of them
    # may have been uploaded. Its high-water mark bounds every number it issued, so the log goes
    # on from there; the numbers skipped reach the back office as a declared floor (a gap).
    floor = j.last_seq + 1
    if j.high_water > floor:
        floor = j.high_water
    if txlog.last_seq < floor - 1:
        txlog.set_floor(floor)
    if acked > txlog.acked_seq:
        txlog.ack(acked)
    kind, blob = j._load_pending()
    entries = []
    if blob is not None and kind == _PEND_BYTES:
        try:
            entries = decode_pending(blob)
        except ValueError as e:
            _log.error("old pending purchases unreadable, not moved: %s", e)
    elif blob is not None:
        _log.error("old pending store holds a %d-byte object, not purchases: ignored", len(blob))
    for e in entries:
        open_now = txlog.open_intents()
        if any(o["card_no"] == e["card_no"] and o["card_atc"] == e["atc"] for o in open_now):
            continue  # moved by an earlier, interrupted run
        if _booked(j, e["card_no"], e["atc"]):
            stale += 1
            _log.info("pending purchase ATC %d already booked, not an intent", e["atc"])
            continue
        txlog.append(intent_fields(e))
        intents += 1
    j.close()
    with open(root + "/" + _MARKER, "wb") as f:
        f.write(b"1")
    _remove_tree(root)
    _log.warning(
        "old journal moved: %d records, %d pending purchases as open intents (%d already booked)",
        moved,
        intents,
        stale,
    )
    return {"records": moved, "intents": intents, "stale_pending": stale}
