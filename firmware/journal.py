# The littlefs transaction journal of earlier releases: 64-byte records (record.py) in segment
# files, plus the pending-purchase blob. The validator now keeps its records in the raw-flash log
# (txlog.py); this module stays as the reader firmware/txlog_migrate.py uses at the first boot
# after the upgrade (and its tests keep it honest). Its design is in the git history of
# docs/journal.md.
#
# Durability rests on littlefs: a file's content is committed atomically at each flush (sync), so
# one write+flush per record makes the record durable when append() returns, and a cut before
# that leaves the file as it was. Small state (upload cursor, sequence high-water mark, pending
# purchase) is replaced whole by write-to-temp + rename, which littlefs also commits atomically.
# Every record read back is still checked (CRC, version, expected sequence) because flash can rot
# and files can be planted or truncated by hand; a bad record and everything after it in its
# segment is cut, with a logged note.
import json
import os

import log
import record
from crc import crc32

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_log = log.get("journal")

_REC = const(64)
_ENOSPC = const(28)
_ENOENT = const(2)
_EIO = const(5)
_META_MAGIC = b"JM\x01\x00"
_PEND_MAGIC = b"JP\x01"
_PEND_BYTES = const(0x42)  # "B": raw bytes
_PEND_JSON = const(0x4A)  # "J": a json-serialised object (PendingStore)
_PEND_MAX = const(1024)

DEFAULTS = {
    "seg_records": 64,  # records per segment file: 64 x 64 B fills one 4 KB littlefs block
    "max_segments": None,  # a hard cap; None: only the free space (re-read at each segment)
    "reserve_blocks": 16,  # fs blocks left for parameters and littlefs's copy-on-write
    "warn_pct": 80,  # status "warn" from this share of the capacity in use
    "purchase_reserve": 64,  # slots kept for recovered purchases and events once "full"
    "hwm_step": 1024,  # sequence numbers reserved per high-water-mark write
    "mark": None,  # optional extra store of the high-water mark: object with load()/save(n)
}


class JournalError(Exception):
    pass


class JournalFull(JournalError):
    pass


class AckError(ValueError):
    pass


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError as e:
        if e.args[0] != _ENOENT:
            raise


# Handles whose close failed (file system full, flash failing). They are kept and closed later:
# dropped, the garbage collector would close them at some random moment and sync stale data.
_unclosed = []


def _close_unclosed():
    while _unclosed:
        try:
            _unclosed[0].close()
        except OSError:
            return False
        _unclosed.pop(0)
    return True


def _close_or_keep(f):
    try:
        f.close()
    except OSError:
        _unclosed.append(f)


def _write_atomic(path, data):
    if not _close_unclosed():
        raise OSError(_EIO)
    tmp = path + ".tmp"
    f = open(tmp, "wb")
    try:
        f.write(data)
        f.close()
    except OSError:
        _close_or_keep(f)
        raise
    os.rename(tmp, path)


def _read_file(path, limit):
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def _u32(b, off):
    return (b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]


def _be32(n):
    return bytes(((n >> 24) & 0xFF, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF))


def _seg_name(first):
    return "%08x.seg" % first


def _parse_seg(name):
    if len(name) != 12 or not name.endswith(".seg"):
        return None
    try:
        return int(name[:8], 16)
    except ValueError:
        return None


class FileMark:
    """The high-water mark in a small file outside the journal directory, so that deleting the
    journal directory does not restart the sequence. Format: magic, u32, crc32."""

    def __init__(self, path):
        self.path = path

    def load(self):
        b = _read_file(self.path, 16)
        if b is None:
            return None
        if len(b) != 12 or b[:4] != b"JH\x01\x00" or _u32(b, 8) != crc32(b[:8]):
            _log.warning("high-water mark %s unreadable, ignored", self.path)
            return None
        return _u32(b, 4)

    def save(self, n):
        head = b"JH\x01\x00" + _be32(n)
        _write_atomic(self.path, head + _be32(crc32(head)))


class Journal:
    def __init__(self, root_dir, config=None):
        cfg = dict(DEFAULTS)
        if config:
            for k in config:
                if k not in cfg:
                    raise JournalError("unknown journal setting %r" % k)
                cfg[k] = config[k]
        if not 1 <= cfg["seg_records"] <= 4096:
            raise JournalError("seg_records out of range")
        self.root = root_dir.rstrip("/")
        # The segment being appended to lives alone in cur/: littlefs then commits each append
        # to a one-file directory instead of one holding every segment (whose compactions read
        # much more), and moves it into root_dir with one rename when it is full.
        self._cur = self.root + "/cur"
        self._in_cur = None  # first seq of the segment in cur/, if any
        self._cfg = cfg
        self._seg_records = cfg["seg_records"]
        self._marks = [FileMark(self.root + ".hwm")]
        if cfg["mark"] is not None:
            self._marks.append(cfg["mark"])
        self._buf = bytearray(_REC)
        self._rbuf = bytearray(_REC)
        self._f = None  # the active segment, open for append
        self._broken = None  # a handle whose close failed (see _after_failed_write)
        self._firsts = []  # first seq of each segment, ascending
        self._counts = []  # records in each segment
        self.cut_records = 0  # records cut as corrupt since open
        self._open()

    # ---- opening and recovery -------------------------------------------------------------

    def _open(self):
        for d in (self.root, self._cur):
            try:
                os.mkdir(d)
            except OSError:
                pass  # exists (anything else shows at the first file operation)
        meta_ok, meta_acked, meta_hwm = self._load_meta()
        hwm = meta_hwm
        behind = []
        for m in self._marks:
            try:
                v = m.load()
            except Exception as e:  # a broken optional store must not stop the validator
                _log.warning("high-water mark store failed: %r", e)
                continue
            if v is None or v < hwm:
                behind.append(m)
            elif v > hwm:
                hwm = v
        self._hwm = hwm
        for m in behind:  # a new or stale store catches up now, not at the next reservation
            self._save_mark(m, hwm)
        tail_cut = self._scan()
        if self._firsts:
            last = self._firsts[-1] + self._counts[-1] - 1
            # A cursor past the last record kept means acknowledged records vanished from the
            # end (a clean cut at a record boundary shows no other sign): the back office holds
            # those numbers, so they must never be issued again.
            suspect = (
                tail_cut
                or last + 1 < hwm - self._cfg["hwm_step"]
                or (meta_ok and meta_acked > last)
            )
        elif meta_ok:
            # Segments go only when acknowledged (the newest never) or by wipe(), which moves
            # the cursor to the end first: the cursor is then the last number issued.
            last = meta_acked
            suspect = tail_cut
        else:
            last = 0
            suspect = hwm > 0  # records and cursor gone (a directory deleted by hand?)
        if suspect and hwm > last + 1:
            # Records were cut from the end or lost: one may have been uploaded already, so its
            # number is never issued again. The high-water mark is past every number issued.
            _log.warning("sequence resumes at %d (last record kept %d)", hwm, last)
            last = hwm - 1
        self.last_seq = last
        first = self._firsts[0] if self._firsts else last + 1
        acked = meta_acked
        if acked < first - 1:
            acked = first - 1  # reclaimed segments were acknowledged
        if acked > last:
            acked = last
        self.acked_seq = acked
        self._reclaim()
        self._capacity()
        _log.info(
            "open %s: %d segments, last seq %d, acked %d",
            self.root,
            len(self._firsts),
            last,
            acked,
        )

    def _load_meta(self):
        path = self.root + "/meta"
        b = _read_file(path, 32)
        if b is None:
            return False, 0, 0
        if len(b) != 16 or b[:4] != _META_MAGIC or _u32(b, 12) != crc32(b[:12]):
            _log.warning("journal meta unreadable (%d bytes), cursor restarts", len(b))
            return False, 0, 0
        return True, _u32(b, 4), _u32(b, 8)

    def _save_meta(self, acked, hwm):
        head = _META_MAGIC + _be32(acked) + _be32(hwm)
        _write_atomic(self.root + "/meta", head + _be32(crc32(head)))

    def _path(self, first):
        return (self._cur if first == self._in_cur else self.root) + "/" + _seg_name(first)

    def _list(self, d, where):
        """Segment numbers in directory d (leftover .tmp files removed, others logged)."""
        out = []
        names = [entry[0] for entry in os.ilistdir(d)]  # listed before anything changes
        for name in names:
            if name.endswith(".tmp"):
                _remove(d + "/" + name)  # an interrupted replace: the original stands
                continue
            if d == self.root and name in ("meta", "pending", "cur"):
                continue
            first = _parse_seg(name)
            if first is None:
                _log.warning("ignoring unknown file %s in journal", where + name)
                continue
            out.append(first)
        return out

    def _scan(self):
        """Index the segment files, checking every record; returns True when records were cut
        from the newest segment."""
        in_cur = self._list(self._cur, "cur/")
        firsts = self._list(self.root, "")
        for first in in_cur:
            if first in firsts:  # cannot happen by renames: keep the sealed copy
                _log.error("segment %s in both places, cur/ copy removed", _seg_name(first))
                _remove(self._cur + "/" + _seg_name(first))
            else:
                firsts.append(first)
        firsts.sort()
        tail_cut = False
        prev_end = 0  # seq after the last kept record
        for i in range(len(firsts)):
            first = firsts[i]
            self._in_cur = first if first in in_cur else None
            path = self._path(first)
            if first < prev_end or first == 0:
                _log.error("segment %s overlaps earlier records, removed", _seg_name(first))
                _remove(path)
                tail_cut = tail_cut or i == len(firsts) - 1
                continue
            size = os.stat(path)[6]
            n, why = self._check_segment(path, first, size)
            if why:
                _log.warning(
                    "segment %s: %s at record %d of %d bytes, cut", _seg_name(first), why, n, size
                )
                self.cut_records += size // _REC - n
                self._truncate(path, n)
                if i == len(firsts) - 1:
                    tail_cut = True
            if n == 0:
                _remove(path)
                continue
            if prev_end and first > prev_end:
                _log.warning("records %d..%d missing before %s", prev_end, first - 1, path)
            self._firsts.append(first)
            self._counts.append(n)
            prev_end = first + n
        self._in_cur = None
        newest = self._firsts[-1] if self._firsts else None
        for first in self._firsts:
            if first in in_cur and first != newest:  # only the newest stays in cur/
                name = _seg_name(first)
                os.rename(self._cur + "/" + name, self.root + "/" + name)
        if newest in in_cur:
            self._in_cur = newest
        return tail_cut

    def _check_segment(self, path, first, size):
        """(number of good records at the start, reason for the cut or None)."""
        # No limit on the count: a segment written with a larger seg_records setting is valid.
        n = 0
        buf = self._rbuf
        with open(path, "rb") as f:
            while True:
                got = f.readinto(buf)
                if not got:
                    break
                if got != _REC:
                    return n, "torn record"
                if not record.valid(buf):
                    return n, "bad record (CRC/version)"
                if record.seq_of(buf) != first + n:
                    return n, "sequence %d where %d expected" % (record.seq_of(buf), first + n)
                n += 1
        return n, None

    def _truncate(self, path, n):
        # MicroPython files cannot truncate: copy the good prefix and replace the file at once.
        if n == 0:
            _remove(path)
            return
        if not _close_unclosed():
            raise OSError(_EIO)
        tmp = path + ".tmp"
        buf = self._rbuf
        with open(path, "rb") as src:
            dst = open(tmp, "wb")
            try:
                for _ in range(n):
                    src.readinto(buf)
                    dst.write(buf)
                dst.close()
            except OSError:
                _close_or_keep(dst)
                raise
        os.rename(tmp, path)

    def _capacity(self):
        """Estimate the segments the journal may hold from the free space now (other parts of
        the firmware use the same file system), capped by the max_segments setting. Run at
        open, at each new segment and after reclaim, so it follows the space actually left.
        The estimate drives the status and when purchases stop; _roll() refuses a new segment
        only at the hard limits, so the purchase reserve is there even if the estimate was
        optimistic."""
        try:
            st = os.statvfs(self.root)
            bsize, blocks, bfree = st[0], st[2], st[3]
            if bfree > blocks:  # littlefs reports nonsense when it is completely full
                bfree = 0
        except OSError:
            bsize, bfree = 4096, 0
        self._bfree = bfree
        per_seg = (self._seg_records * _REC + bsize - 1) // bsize
        if per_seg > 1:
            per_seg += 1  # littlefs's skip-list pointers spill into one more block
        self._per_seg = per_seg
        # Each segment also costs directory metadata: measured at about 1/10 block per
        # segment on 4 KB blocks, counted here as 1/8.
        spare = bfree - self._cfg["reserve_blocks"]
        maxseg = len(self._firsts) + (spare * 8 // (per_seg * 8 + 1) if spare > 0 else 0)
        cfg_max = self._cfg["max_segments"]
        if cfg_max is not None and cfg_max < maxseg:
            maxseg = cfg_max
        self.max_segments = maxseg
        self.capacity = maxseg * self._seg_records

    # ---- appending --------------------------------------------------------------------------

    def _used(self):
        n = len(self._counts)
        if not n:
            return 0
        return (n - 1) * self._seg_records + self._counts[-1]

    def _free(self):
        return self.capacity - self._used()

    def can_accept_purchase(self):
        """False once only the reserve is left: the purchase flow must refuse the tap (the
        reserve takes the record of a purchase already under way and recovered purchases)."""
        return self._free() > self._cfg["purchase_reserve"]

    @property
    def high_water(self):
        """Numbers below this may have been issued: they are reserved hwm_step at a time, and a
        clean cut at the end of the newest segment (whole records gone) leaves no other trace, so
        last_seq can be below a number already uploaded. The migration numbers on from here."""
        return self._hwm

    def _reserve_seq(self, seq):
        if seq < self._hwm:
            return
        hwm = seq + self._cfg["hwm_step"]
        self._save_meta(self.acked_seq, hwm)
        for m in self._marks:
            self._save_mark(m, hwm)
        self._hwm = hwm

    def _save_mark(self, m, hwm):
        if not hwm:
            return
        try:
            m.save(hwm)
        except Exception as e:
            if isinstance(e, OSError) and e.args[0] != _ENOSPC:
                raise  # the device is failing: let the caller see it
            _log.warning("high-water mark store failed: %r", e)

    def _roll(self, seq):
        if self._f is not None:
            self._f.close()
            self._f = None
        self._capacity()
        cfg_max = self._cfg["max_segments"]
        if cfg_max is not None and len(self._firsts) >= cfg_max:
            raise JournalFull("journal full: %d segments unacknowledged" % len(self._firsts))
        if self._bfree < self._cfg["reserve_blocks"] // 2 + self._per_seg:
            # the other half of reserve_blocks stays for littlefs's copy-on-write and metadata
            raise JournalFull("journal full: %d blocks left in the file system" % self._bfree)
        if self._in_cur is not None:
            name = _seg_name(self._in_cur)
            os.rename(self._cur + "/" + name, self.root + "/" + name)
            self._in_cur = None
        self._f = open(self._cur + "/" + _seg_name(seq), "ab")
        self._in_cur = seq
        self._firsts.append(seq)
        self._counts.append(0)

    def append(self, fields):
        """Store one record and return its sequence number; durable when this returns.
        JournalFull when no slot is left; record.RecordError on a field that does not fit."""
        if self._broken is not None and not self._settle():
            raise JournalError("journal storage failing: segment handle will not close")
        seq = self.last_seq + 1
        buf = self._buf
        record.encode_into(buf, fields, seq)  # before touching flash: bad input changes nothing
        try:
            self._reserve_seq(seq)
            counts = self._counts
            last_first = self._firsts[-1] if counts else -1
            if (
                last_first != self._in_cur
                or counts[-1] >= self._seg_records
                or last_first + counts[-1] != seq
            ):
                self._roll(seq)
            elif self._f is None:
                self._f = open(self._cur + "/" + _seg_name(last_first), "ab")
            f = self._f
            if f.write(buf) != _REC:
                raise OSError(_ENOSPC)
            f.flush()
        except OSError as e:
            self._after_failed_write()
            if e.args[0] == _ENOSPC:
                _log.error("append %d refused: file system full", seq)
                raise JournalFull("file system full")
            _log.error("append %d failed: %r", seq, e)
            raise
        except JournalFull as e:
            _log.error("append %d refused: %s", seq, e)
            raise
        self._counts[-1] += 1
        self.last_seq = seq
        return seq

    def _after_failed_write(self):
        # The handle's state is unknown after a failed write. A handle whose close fails is
        # kept, not dropped: the garbage collector would close it (and sync its stale view of
        # the segment) at some later moment, over what newer appends wrote.
        f = self._f
        self._f = None
        if f is not None:
            self._broken = f
        self._settle()

    def _settle(self):
        """Close a handle left by a failed write; then count what the active segment really
        holds. False while that handle still cannot be closed."""
        f = self._broken
        if f is not None:
            try:
                f.close()
            except OSError as e:
                _log.error("segment handle will not close: %r", e)
                return False
            self._broken = None
        if self._firsts:
            path = self._path(self._firsts[-1])
            try:
                n = os.stat(path)[6] // _REC
            except OSError:
                n = 0
            if n > self._counts[-1]:
                # the record reached flash after all: its number stays used
                self.last_seq = self._firsts[-1] + n - 1
                self._counts[-1] = n
            if n == 0 and self._counts[-1] == 0:
                if self._firsts.pop() == self._in_cur:
                    self._in_cur = None
                self._counts.pop()
                try:
                    _remove(path)
                except OSError:
                    pass  # an empty file is dropped at the next open anyway
        return True

    # ---- upload cursor ----------------------------------------------------------------------

    @property
    def backlog(self):
        """Stored records above the cursor: last_seq - acked_seq, unless a corruption cut left
        numbers without records."""
        n = 0
        acked = self.acked_seq
        firsts = self._firsts
        counts = self._counts
        for i in range(len(firsts)):
            first = firsts[i]
            end = first + counts[i]  # one past the last
            if end - 1 > acked:
                n += counts[i] if first > acked else end - 1 - acked
        return n

    def records_after(self, seq, limit=32):
        """Up to `limit` stored records with a sequence number above `seq`, oldest first, as
        bytes (only records that check out; a record gone bad since open is logged, skipped)."""
        out = []
        want = seq + 1
        firsts = self._firsts
        counts = self._counts
        for i in range(len(firsts)):
            if len(out) >= limit:
                break
            first = firsts[i]
            end = first + counts[i]
            if end <= want:
                continue
            start = want - first if want > first else 0
            try:
                with open(self._path(first), "rb") as f:
                    f.seek(start * _REC)
                    for k in range(start, counts[i]):
                        if len(out) >= limit:
                            break
                        b = f.read(_REC)
                        if len(b) != _REC or not record.valid(b) or record.seq_of(b) != first + k:
                            _log.error("record %d unreadable in %s, skipped", first + k, first)
                            continue
                        out.append(b)
            except OSError as e:
                _log.error("segment %d unreadable: %r", first, e)
        return out

    def ack(self, seq):
        """The back office holds every record up to `seq`: move the cursor, reclaim segments.
        AckError for a sequence number not yet issued or below the cursor."""
        if not isinstance(seq, int) or seq > self.last_seq:
            _log.warning("ack %r refused: unknown (last seq %d)", seq, self.last_seq)
            raise AckError("ack of unknown sequence %r" % (seq,))
        if seq < self.acked_seq:
            _log.warning("ack %d refused: below the cursor %d", seq, self.acked_seq)
            raise AckError("ack %d regresses below %d" % (seq, self.acked_seq))
        if seq == self.acked_seq:
            return False  # repeated ack
        self._save_meta(seq, self._hwm)
        self.acked_seq = seq
        self._reclaim()
        return True

    def _reclaim(self):
        # Whole segments only, never the newest (it carries the last sequence number), and only
        # once every record in them is acknowledged.
        firsts = self._firsts
        counts = self._counts
        freed = False
        while len(firsts) > 1 and firsts[0] + counts[0] - 1 <= self.acked_seq:
            _remove(self._path(firsts[0]))
            firsts.pop(0)
            counts.pop(0)
            freed = True
        if freed:
            self._capacity()

    # ---- pending purchase (tearing store) ---------------------------------------------------

    def save_pending(self, blob, _kind=_PEND_BYTES):
        """Durably keep `blob` (up to 1 KB) until clear_pending(); replaces any earlier one."""
        blob = bytes(blob)
        if len(blob) > _PEND_MAX:
            raise JournalError("pending blob of %d bytes, at most %d" % (len(blob), _PEND_MAX))
        head = _PEND_MAGIC + bytes((_kind, len(blob) >> 8, len(blob) & 0xFF))
        _write_atomic(self.root + "/pending", head + _be32(crc32(blob, crc32(head))) + blob)

    def _load_pending(self):
        b = _read_file(self.root + "/pending", _PEND_MAX + 32)
        if b is None:
            return None, None
        if len(b) >= 10 and b[:3] == _PEND_MAGIC:
            n = (b[4] << 8) | b[5]
            if len(b) == 10 + n and _u32(b, 6) == crc32(b[10:], crc32(b[:6])):
                return b[3], b[10:]
        _log.error("pending record corrupt (%d bytes), ignored", len(b))
        return None, None

    def load_pending(self):
        """The saved blob, or None when there is none (or it is corrupt: logged)."""
        kind, blob = self._load_pending()
        return blob

    def clear_pending(self):
        _remove(self.root + "/pending")

    # ---- status -----------------------------------------------------------------------------

    def status(self):
        used = self._used()
        if not self.can_accept_purchase():
            state = "full"
        elif used * 100 >= self.capacity * self._cfg["warn_pct"]:
            state = "warn"
        else:
            state = "ok"
        return {
            "state": state,
            "last_seq": self.last_seq,
            "acked_seq": self.acked_seq,
            "backlog": self.backlog,
            "used": used,
            "capacity": self.capacity,
            "segments": len(self._firsts),
            "cut_records": self.cut_records,
        }

    def wipe(self):
        """Drop every record and the pending purchase (maintenance). Sequence numbers go on."""
        self.close()
        last = self.last_seq
        # The cursor moves to the end first: a cut half-way leaves acknowledged segments that
        # the next open reclaims, and an empty journal whose cursor is the last number issued.
        self._save_meta(last, self._hwm)
        self.acked_seq = last
        for first in self._firsts:
            _remove(self._path(first))
        self._in_cur = None
        self._firsts = []
        self._counts = []
        self.clear_pending()
        _log.warning("journal wiped at seq %d", last)

    def close(self):
        f = self._f
        self._f = None
        if f is not None:
            f.close()
        if self._broken is not None:
            self._settle()


class PendingStore:
    """The purchase's tearing store (save/load/clear) on a Journal: bytes are kept as they are,
    anything else (a small dict) as json."""

    def __init__(self, journal):
        self.j = journal

    def save(self, obj):
        if isinstance(obj, (bytes, bytearray, memoryview)):
            self.j.save_pending(obj)
        else:
            self.j.save_pending(json.dumps(obj).encode(), _PEND_JSON)

    def load(self):
        kind, blob = self.j._load_pending()
        if blob is None:
            return None
        if kind == _PEND_JSON:
            try:
                return json.loads(blob)
            except ValueError:
                _log.error("pending record is not json, ignored")
                return None
        return blob

    def clear(self):
        self.j.clear_pending()
