# The transaction log: 64-byte records (record.py) appended to a raw flash partition (the
# esp32.Partition interface: boards/unix_sim/rawflash.py in tests). Format, recovery, capacity and
# wear: docs/journal.md.
#
# The partition is a ring of 4 KB sectors of 64-byte slots. Slot 0 of a sector in use holds its
# header (magic, epoch, the sequence number its first record gets, the acknowledged cursor, how
# many carried intents follow); then copies of the intents still open when the sector was opened
# ("carries"); then records and ack notes, in the order they were written. A sector is opened by
# programming its carries first and its header last, so a sector with a valid header always holds
# complete carries; a cut before that leaves a sector without a header, erased before reuse.
# Boot reads every header and the slots of the newest sector only: the open intents are that
# sector's carries plus its own intents not closed by its own outcomes.
#
# An outcome that differs from its open intent only in kind, flags, TAC and reason (every sale)
# is programmed as a 22-byte delta naming the intent's sequence number; an open intent is always
# in the current sector (its own record or a carry), so the delta and its intent share a sector
# and readers rebuild the full 64-byte record from the two (docs/journal.md "Outcome deltas").
#
# An append is one program of one slot, never an erase: sectors are erased ahead of use in idle
# time (maintain()), which also rolls to the next sector while idle when the current one is
# nearly full, so a tap's intent and outcome land in a sector already prepared. An inline roll
# (no idle time) is still correct, only slower. The newest sector is never erased, so sequence
# numbers never go back, whatever is acknowledged and erased.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


import struct

import log
import record
from crc import crc32

_log = log.get("txlog")

_SLOT = const(64)
_CRC_AT = const(60)
_MAGIC = b"TXL\x01"
_NOTE = const(0xA5)  # first byte of a note slot (records start with record.VERSION)
_NOTE_ACK = const(1)
_NOTE_FLOOR = const(2)  # the parameter version floor (docs/parameters.md "Rollback")
_DELTA = const(0xA6)  # first byte of an outcome delta slot
# Headers and notes program only the bytes they use (the rest of the slot stays erased): the
# bytes programmed per record are the log's flash cost. Header: magic 4, epoch 4, first seq 4,
# acked 4, carries 1, 0 x3, CRC-32 of the 20 before; then the parameter floor: version 4, key 4,
# CRC-32 of those 8 (its own CRC: a header without it, from an older release, stays valid).
# Ack note: 0xA5, 1, seq 4, CRC-32 of the 6. Floor note: 0xA5, 2, version 4, key 4, CRC-32 of
# the 10. The floor is not a record: it is never uploaded and takes no sequence number.
_HDR_CRC = const(20)
_FLOOR_AT = const(24)
_FLOOR_CRC = const(32)
_HDR_FULL = const(36)
_NOTE_CRC = const(6)
_NOTE_LEN = const(10)
_FN_CRC = const(10)
_FN_LEN = const(14)
_KIND_AT = const(1)
_SEQ_AT = const(6)
_CARD_AT = const(24)
_CARD_END = const(34)
_ATC_AT = const(47)
# Outcome delta: 0xA6, kind, flags, reason, 0 0, seq 4 (where a record has it), the intent's seq
# 4, TAC 4, CRC-32 of the 18 before: 22 bytes programmed.
_D_REF = const(10)
_D_TAC = const(14)
_D_CRC = const(18)
_D_LEN = const(22)
_R_FLAGS = const(2)
_R_TAC = const(49)
_R_REASON = const(59)

# sector states (RAM)
_UNKNOWN = const(0)  # header slot erased: not checked further yet
_READY = const(1)  # verified (or made) fully erased since boot
_LIVE = const(2)  # a valid header
_DIRTY = const(3)  # something programmed, no valid header: erase before use

DEFAULTS = {
    "purchase_reserve": 64,  # slots kept for outcomes, recoveries and events once "full"
    "warn_pct": 80,  # status "warn" from this share of the capacity in use
    "roll_slack": 2,  # maintain() rolls when fewer free slots remain (a tap writes 2)
    "open_max": 8,  # open intents kept; a new intent beyond needs an acknowledged one released
    "release_age": 4096,  # records after which an acknowledged open intent is released
}


class TxLogError(Exception):
    pass


class LogFull(TxLogError):
    pass


class AckError(ValueError):
    pass


def _u32(b, off):
    return (b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]


def _put32(b, off, n):
    b[off] = (n >> 24) & 0xFF
    b[off + 1] = (n >> 16) & 0xFF
    b[off + 2] = (n >> 8) & 0xFF
    b[off + 3] = n & 0xFF


def _erased(b):
    for x in b:
        if x != 0xFF:
            return False
    return True


def _zero(b):
    for x in b:
        if x:
            return False
    return True


def _crc_ok(b, at):
    return crc32(memoryview(b)[:at]) == _u32(b, at)


def _is_delta(b):
    return b[0] == _DELTA and _crc_ok(b, _D_CRC)


def _stored(b):
    """A record or an outcome delta with a good CRC (both carry their seq at the same place)."""
    return record.valid(b) or _is_delta(b)


def _same_but_outcome(rec, intent):
    """rec (an encoded outcome) equals intent but in kind, flags, seq, TAC, reason and CRC."""
    for i in range(3, _SEQ_AT):
        if rec[i] != intent[i]:
            return False
    for i in range(_SEQ_AT + 4, _R_TAC):
        if rec[i] != intent[i]:
            return False
    for i in range(_R_TAC + 4, _R_REASON):
        if rec[i] != intent[i]:
            return False
    return rec[0] == intent[0]


def _apply(out, d, intent):
    """out = the full record of delta d over intent (its 64 bytes, valid)."""
    out[:] = intent
    out[_KIND_AT] = d[1]
    out[_R_FLAGS] = d[2]
    out[_R_REASON] = d[3]
    out[_SEQ_AT : _SEQ_AT + 4] = d[_SEQ_AT : _SEQ_AT + 4]
    out[_R_TAC : _R_TAC + 4] = d[_D_TAC : _D_TAC + 4]
    _put32(out, _CRC_AT, crc32(memoryview(out)[:_CRC_AT]))


class TxLog:
    def __init__(self, dev, config=None):
        cfg = dict(DEFAULTS)
        if config:
            for k in config:
                if k not in cfg:
                    raise TxLogError("unknown txlog setting %r" % k)
                cfg[k] = config[k]
        self._cfg = cfg
        self._dev = dev
        self.held = None  # a reason while nothing may be appended (see hold())
        bs = dev.ioctl(5, 0)
        n = dev.ioctl(4, 0)
        if not bs or bs % _SLOT or bs // _SLOT < 8 or bs // _SLOT > 256:
            raise TxLogError("block size %r unusable" % (bs,))
        if not n or n < 3:
            raise TxLogError("a log needs at least 3 sectors, partition has %r" % (n,))
        self._n = n
        self._slots = bs // _SLOT
        self._bs = bs
        self._buf = bytearray(_SLOT)  # the record being appended
        self._rbuf = bytearray(_SLOT)  # reads
        self._hbuf = bytearray(_SLOT)  # headers and notes
        self._hview = memoryview(self._hbuf)
        self._zbuf = bytes(_SLOT)  # zeros: seals a torn slot
        self._tbuf = bytearray(_SLOT)  # the newest record as it read valid at boot
        self._xbuf = bytearray(_SLOT)  # an intent read back to rebuild an outcome delta
        self._dbuf = bytearray(_SLOT)  # an outcome delta being written or rebuilt
        self._dcrc = memoryview(self._dbuf)[:_D_CRC]
        self._dout = memoryview(self._dbuf)[:_D_LEN]
        self._state = bytearray(n)
        self._epoch = [0] * n
        self._first = [0] * n
        self._carry = bytearray(n)
        self._order = []  # LIVE sectors, oldest epoch first
        self._cur = -1  # the newest sector (-1: none yet)
        self._next = 0  # next free slot in it
        self._pool = []  # open intents (64-byte records), oldest first; _open are in use
        self._open = 0
        self._rescan = False
        self._ack_held = False  # an ack in RAM only, until the next header
        self._ahead = 0  # sectors after the current one that may be reused
        self.last_seq = 0
        self.acked_seq = 0
        # The parameter version floor (key id, version) that params.py keeps here as a third
        # copy: the highest of the headers' and floor notes' values. Set by note_param_floor().
        self.param_floor = (0, 0)
        self.cut_records = 0
        self.erases = 0
        self.released = 0
        self._recover()

    # ---- flash primitives ---------------------------------------------------------------------

    def _read(self, sector, slot, buf):
        self._dev.readblocks(sector, buf, slot * _SLOT)

    def _program(self, sector, slot, buf):
        self._dev.writeblocks(sector, buf, slot * _SLOT)

    def _erase(self, sector):
        self._state[sector] = _DIRTY  # until it is done: a failure leaves it to be erased again
        self._dev.ioctl(6, sector)
        self.erases += 1
        self._state[sector] = _READY
        self._epoch[sector] = 0

    # ---- recovery -----------------------------------------------------------------------------

    def _floor_in(self, b, at):
        """Raise param_floor from the (version, key) pair at b[at:] (its CRC checked)."""
        v = _u32(b, at)
        k = _u32(b, at + 4)
        pk, pv = self.param_floor
        self.param_floor = (k if k > pk else pk, v if v > pv else pv)

    def _recover(self):
        h = self._hbuf
        acked = 0
        best = -1
        floors = {}  # sector: its header's parameter floor, counted once the header is trusted
        for s in range(self._n):
            self._read(s, 0, h)
            if _erased(h):
                self._state[s] = _UNKNOWN
            elif h[:4] == _MAGIC and _crc_ok(h, _HDR_CRC) and h[16] < self._slots:
                self._state[s] = _LIVE
                if best < 0 or _u32(h, 4) > self._epoch[best]:
                    best = s
                    self._tbuf[:_HDR_FULL] = h[:_HDR_FULL]  # the newest header, as read valid
                self._epoch[s] = _u32(h, 4)
                self._first[s] = _u32(h, 8)
                self._carry[s] = h[16]
                if crc32(self._hview[_FLOOR_AT:_FLOOR_CRC]) == _u32(h, _FLOOR_CRC):
                    floors[s] = bytes(h[_FLOOR_AT:_FLOOR_CRC])
                a = _u32(h, 12)
                if a > acked:
                    acked = a
            else:
                _log.warning("sector %d: no valid header, erased before reuse", s)
                self._state[s] = _DIRTY
        order = [s for s in range(self._n) if self._state[s] == _LIVE]
        order.sort(key=lambda s: self._epoch[s])
        # Epochs and first sequence numbers only grow along the ring: a header that breaks this
        # (planted, or left by a foreign tool) is not trusted with sequence numbers.
        # Walked from the newest back.
        kept = []
        for i in range(len(order) - 1, -1, -1):
            s = order[i]
            if kept and (
                self._epoch[s] == self._epoch[kept[-1]] or self._first[s] > self._first[kept[-1]]
            ):
                _log.error("sector %d: header out of order (epoch %d), ignored", s, self._epoch[s])
                self._state[s] = _DIRTY
                continue
            kept.append(s)
        for s in kept:
            if s in floors:
                self._floor_in(floors[s], 0)
        kept.reverse()
        self._order = kept
        self._pool = [bytearray(_SLOT) for _ in range(self._cfg["open_max"])]
        self._open = 0
        if kept:
            self._cur = kept[-1]
            if self._cur == best:
                # The same bits over the newest header: settles cells a roll cut at the very end
                # of its header program left marginal (valid now, maybe not at the next boot).
                # (Over an older header's erased floor bytes this programs 0xFF: no change.)
                self._program(best, 0, memoryview(self._tbuf)[:_HDR_FULL])
            self.last_seq = self._first[self._cur] - 1
            # Sectors are erased oldest first and only once acknowledged (an ack may have been
            # held in RAM when its sector went): whatever lies before the oldest one left was
            # acknowledged.
            if self._first[kept[0]] - 1 > acked:
                acked = self._first[kept[0]] - 1
            self.acked_seq = acked
            self._scan_tail()
        else:
            self._cur = -1
            self._next = self._slots
            self.last_seq = 0
            self.acked_seq = 0
        # A sector after the newest one that holds records but no valid header: the newest
        # header itself rotted (or was overwritten). Its records cannot be placed, but their
        # numbers must not be issued again. (A cut roll leaves only carries: older numbers.)
        dirty = [(self._cur + 1) % self._n] if kept else range(self._n)
        for s in dirty:
            if self._state[s] == _DIRTY:
                top = self._max_seq_in(s)
                if top > self.last_seq:
                    _log.error(
                        "sector %d: no header but records up to %d, numbering goes on", s, top
                    )
                    self.last_seq = top
                    self._next = self._slots  # the next append opens a fresh sector
        if self.acked_seq > self.last_seq:
            self.acked_seq = self.last_seq
        self._release(False)
        self._recount()
        _log.info(
            "open: %d sectors in use of %d, last seq %d, acked %d, %d open intents",
            len(self._order),
            self._n,
            self.last_seq,
            self.acked_seq,
            self._open,
        )

    def _max_seq_in(self, s):
        b = self._rbuf
        top = 0
        for slot in range(1, self._slots):
            self._read(s, slot, b)
            if _stored(b) and record.seq_of(b) > top:
                top = record.seq_of(b)
        return top

    def _scan_tail(self):
        """Read the newest sector: carries, records, notes. Sets last_seq, acked_seq, the next
        free slot and the open intents; seals torn slots."""
        s = self._cur
        b = self._rbuf
        c = self._carry[s]
        self._open = 0
        first = self._first[s]
        for slot in range(1, 1 + c):
            self._read(s, slot, b)
            if record.valid(b) and b[_KIND_AT] == record.DEBIT_INTENT:
                self._add_open(b)
            else:
                _log.error("sector %d: carried intent in slot %d unreadable", s, slot)
                self.cut_records += 1
        last = first - 1
        acked = self.acked_seq
        end = 1 + c  # one past the last slot holding anything
        good = -1  # slot of the last valid record
        bad = []
        for slot in range(1 + c, self._slots):
            self._read(s, slot, b)
            if _erased(b):
                continue
            end = slot + 1
            if _stored(b) and record.seq_of(b) > last:
                last = record.seq_of(b)
                good = slot
                self._tbuf[:] = b  # as it read valid (marginal cells may read otherwise later)
                if b[0] == _DELTA:
                    intent = self._intent_for(b)
                    if intent is None:
                        # its intent was released (acknowledged) or is unreadable: the
                        # outcome's number stands; the record itself is read back whole by
                        # records_after() from this sector when the intent is there
                        _log.warning(
                            "sector %d slot %d: outcome %d of no open intent", s, slot, last
                        )
                        continue
                    self._dbuf[:] = b
                    _apply(b, self._dbuf, intent)
                k = b[_KIND_AT]
                if k == record.DEBIT_INTENT:
                    self._add_open(b)
                elif k in record.OUTCOME_KINDS:
                    self._close(b)
            elif b[0] == _NOTE and b[1] == _NOTE_ACK and _crc_ok(b, _NOTE_CRC):
                a = _u32(b, 2)
                if a > acked:
                    acked = a
            elif b[0] == _NOTE and b[1] == _NOTE_FLOOR and _crc_ok(b, _FN_CRC):
                self._floor_in(b, 2)
            elif not _zero(b):
                bad.append(slot)
        self._next = end
        for slot in bad:
            # A torn program (a cut append or note): zeroed, so it reads the same at every boot.
            # Its number is issued again only if it was the last: an append cut half-way never
            # returned and never read back valid, so nothing can have uploaded it.
            if slot < good:
                self.cut_records += 1
                _log.error("sector %d slot %d: record unreadable, skipped", s, slot)
            else:
                _log.warning("sector %d slot %d: torn write sealed", s, slot)
            self._program(s, slot, self._zbuf)
        if good > 0:
            # Re-program the last record over itself, with the bytes that read valid: identical
            # bits, so nothing changes on a good record, but a program cut at its very end is
            # completed and stops reading back differently from boot to boot (it may have been
            # uploaded already).
            self._program(s, good, self._tbuf)
        self.last_seq = last
        if acked > last:
            acked = last
        self.acked_seq = acked
        self._rescan = False

    # ---- open intents (RAM) -------------------------------------------------------------------

    def _add_open(self, b):
        if self._open == len(self._pool):
            self._pool.append(bytearray(_SLOT))  # only at boot: append() releases or refuses
        self._pool[self._open][:] = b
        self._open += 1

    def _match(self, b):
        """Index in the open set of the intent outcome b closes (same card_no, card_atc), or -1."""
        pool = self._pool
        for i in range(self._open):
            p = pool[i]
            if p[_ATC_AT] != b[_ATC_AT] or p[_ATC_AT + 1] != b[_ATC_AT + 1]:
                continue
            same = True
            for k in range(_CARD_AT, _CARD_END):
                if p[k] != b[k]:
                    same = False
                    break
            if same:
                return i
        return -1

    def _close(self, b):
        i = self._match(b)
        if i < 0:
            return False
        self._drop(i)
        return True

    def _delta_of(self, buf):
        """The outcome delta for the encoded outcome buf, in _dbuf, when its intent is open and
        they differ only where a delta can say it -> True; else False (a full record is due)."""
        i = self._match(buf)
        if i < 0:
            return False
        intent = self._pool[i]
        if not _same_but_outcome(buf, intent):
            return False
        d = self._dbuf
        d[0] = _DELTA
        d[1] = buf[_KIND_AT]
        d[2] = buf[_R_FLAGS]
        d[3] = buf[_R_REASON]
        d[4] = 0
        d[5] = 0
        for k in range(4):
            d[_SEQ_AT + k] = buf[_SEQ_AT + k]
            d[_D_REF + k] = intent[_SEQ_AT + k]
            d[_D_TAC + k] = buf[_R_TAC + k]
        struct.pack_into(">I", d, _D_CRC, crc32(self._dcrc))
        return True

    def _intent_for(self, d):
        """The open intent a delta refers to (from RAM), or None."""
        ref = _u32(d, _D_REF)
        for i in range(self._open):
            if record.seq_of(self._pool[i]) == ref:
                return self._pool[i]
        return None

    def _rebuild(self, s, slot, b):
        """b holds the outcome delta read from (s, slot): rebuild the full record in b from the
        intent it names, looked for backwards in the same sector. False if it is not there."""
        ref = _u32(b, _D_REF)
        x = self._xbuf
        k = slot - 1
        while k >= 1:
            self._read(s, k, x)
            if record.valid(x) and record.seq_of(x) == ref and x[_KIND_AT] == record.DEBIT_INTENT:
                self._dbuf[:] = b
                _apply(b, self._dbuf, x)
                return True
            k -= 1
        _log.error(
            "sector %d slot %d: outcome %d without its intent %d", s, slot, record.seq_of(b), ref
        )
        return False

    def _drop(self, i):
        pool = self._pool
        p = pool[i]
        for j in range(i, self._open - 1):
            pool[j] = pool[j + 1]
        self._open -= 1
        pool[self._open] = p

    def _release(self, need_room):
        """Release acknowledged open intents: those older than release_age records, and with
        need_room the oldest acknowledged one when the set is full. Unacknowledged never."""
        age = self._cfg["release_age"]
        cap = self._cfg["open_max"]
        i = 0
        freed = False
        while i < self._open:
            seq = record.seq_of(self._pool[i])
            over = self._open > cap or (need_room and not freed and self._open >= cap)
            if seq <= self.acked_seq and (self.last_seq - seq >= age or over):
                _log.warning("open intent %d released (acknowledged, unresolved)", seq)
                self._drop(i)
                self.released += 1
                freed = True
                continue
            i += 1
        return freed

    @property
    def open_count(self):
        """How many intents are open (no allocation: the tap asks it every time)."""
        return self._open

    def open_intents(self):
        """record.decode() of each open DEBIT_INTENT, with "seq", oldest first (from RAM)."""
        out = []
        for i in range(self._open):
            d = record.decode(self._pool[i])
            out.append(d)
        return out

    # ---- capacity -----------------------------------------------------------------------------

    def _sector_end(self, k):
        """One past the last sequence number sector _order[k] can hold."""
        if k + 1 < len(self._order):
            return self._first[self._order[k + 1]]
        return self.last_seq + 1

    def _reusable(self, s):
        if self._state[s] != _LIVE:
            return True
        k = self._order.index(s)
        return k < len(self._order) - 1 and self._sector_end(k) - 1 <= self.acked_seq

    def _recount(self):
        # Sectors after the current one, in ring order, until the first holding unacknowledged
        # records: what the log can still use. Kept up to date here (boot, ack, roll, erase) so
        # can_accept_purchase() in the tap is O(1).
        n = 0
        if self._cur < 0:
            n = self._n - 1
        else:
            order = self._order
            k = 0  # the ring after the current sector meets the others oldest first
            s = (self._cur + 1) % self._n
            while s != self._cur:
                if self._state[s] == _LIVE:
                    if k >= len(order) or order[k] != s:
                        k = order.index(s)  # out of ring order (a distrusted header went)
                    if k >= len(order) - 1 or self._sector_end(k) - 1 > self.acked_seq:
                        break
                    k += 1
                n += 1
                s = (s + 1) % self._n
        self._ahead = n

    def _per_sector(self):
        return self._slots - 1 - self._open

    def _free(self):
        here = self._slots - self._next if self._cur >= 0 else self._per_sector()
        # one sector stays as the ring's gap: the next roll needs a sector to go to
        ahead = self._ahead - 1 if self._ahead > 0 else 0
        return here + ahead * self._per_sector()

    @property
    def capacity(self):
        return (self._n - 1) * (self._slots - 1)

    def can_accept_purchase(self):
        """Room for an intent and its outcome beyond the reserve, and room in the open set."""
        if self.held or self._free() < self._cfg["purchase_reserve"] + 2:
            return False
        if self._open >= self._cfg["open_max"]:
            # the intent's append will release the oldest acknowledged one, if there is one
            for i in range(self._open):
                if record.seq_of(self._pool[i]) <= self.acked_seq:
                    return True
            return False
        return True

    @property
    def backlog(self):
        return self.last_seq - self.acked_seq

    # ---- appending ----------------------------------------------------------------------------

    def append(self, fields):
        """Store one record and return its sequence number; durable when this returns. One
        program, no erase (unless no sector was prepared: then an inline roll). LogFull when no
        slot is left; record.RecordError on a field that does not fit (nothing written)."""
        if self.held:
            raise TxLogError("log held: " + self.held)
        seq = self.last_seq + 1
        buf = self._buf
        record.encode_into(buf, fields, seq)
        return self._store(buf, seq)

    def hold(self, reason):
        """Refuse every append until the next open: the numbers the log would issue may not be
        free (an older journal that could not be migrated may hold them). Reads, uploads and
        acknowledgements go on."""
        self.held = reason

    def adopt(self, raw):
        """Store an already encoded record keeping its sequence number (migration); it must be
        valid and above last_seq."""
        if not record.valid(raw):
            raise TxLogError("adopt: invalid record")
        seq = record.seq_of(raw)
        if seq <= self.last_seq:
            raise TxLogError("adopt: seq %d not above %d" % (seq, self.last_seq))
        self._buf[:] = raw
        return self._store(self._buf, seq)

    def _store(self, buf, seq):
        if self._rescan:
            self._scan_tail()
            if seq <= self.last_seq:  # the failed program did land after all: renumber
                seq = self.last_seq + 1
                _put32(buf, _SEQ_AT, seq)
                _put32(buf, _CRC_AT, crc32(memoryview(buf)[:_CRC_AT]))
        kind = buf[_KIND_AT]
        if kind == record.DEBIT_INTENT and self._open >= self._cfg["open_max"]:
            if not self._release(True):
                _log.error("append %d refused: %d intents open", seq, self._open)
                raise LogFull("%d unconfirmed debits open" % self._open)
        if self._next >= self._slots:
            self._roll()  # inline: maintain() did not get the chance
        s = self._cur
        slot = self._next
        out = buf
        if kind in record.OUTCOME_KINDS and self._delta_of(buf):
            out = self._dout  # 22 bytes instead of 64: the intent in this sector has the rest
        try:
            self._program(s, slot, out)
        except OSError as e:
            self._rescan = True  # what reached the slot is read back before the next write
            _log.error("append %d failed: %r", seq, e)
            raise
        self._next = slot + 1
        self.last_seq = seq
        if kind == record.DEBIT_INTENT:
            self._pool[self._open][:] = buf
            self._open += 1
        elif kind in record.OUTCOME_KINDS:
            self._close(buf)
        return seq

    def _roll(self):
        """Open the next sector of the ring: carries, then the header (the commit)."""
        t = (self._cur + 1) % self._n if self._cur >= 0 else 0
        if self._cur >= 0 and not self._reusable(t):
            _log.error("log full: sector %d holds unacknowledged records", t)
            raise LogFull("log full: %d records unacknowledged" % self.backlog)
        if self._open + 2 > self._slots:
            raise LogFull("%d open intents do not fit a sector" % self._open)
        self._prepare(t)
        if self._cur >= 0:
            epoch = self._epoch[self._cur] + 1
        else:
            epoch = 1
        try:
            for i in range(self._open):
                self._program(t, 1 + i, self._pool[i])
            h = self._hbuf
            h[:4] = _MAGIC
            _put32(h, 4, epoch)
            _put32(h, 8, self.last_seq + 1)
            _put32(h, 12, self.acked_seq)
            h[16] = self._open
            h[17] = h[18] = h[19] = 0
            _put32(h, _HDR_CRC, crc32(self._hview[:_HDR_CRC]))
            n = _HDR_CRC + 4  # without a floor (no parameters yet) its 12 bytes stay erased
            if self.param_floor[1] or self.param_floor[0]:
                _put32(h, _FLOOR_AT, self.param_floor[1])
                _put32(h, _FLOOR_AT + 4, self.param_floor[0])
                _put32(h, _FLOOR_CRC, crc32(self._hview[_FLOOR_AT:_FLOOR_CRC]))
                n = _HDR_FULL
            self._program(t, 0, self._hview[:n])
        except OSError:
            self._state[t] = _DIRTY
            raise
        self._state[t] = _LIVE
        self._epoch[t] = epoch
        self._first[t] = self.last_seq + 1
        self._carry[t] = self._open
        self._order.append(t)
        self._cur = t
        self._next = 1 + self._open
        self._ack_held = False
        self._recount()

    def _prepare(self, t):
        """Make sector t erased: nothing if known so, a read check if unknown, else an erase."""
        st = self._state[t]
        if st == _READY:
            return False
        if st == _UNKNOWN and self._check_erased(t):
            self._state[t] = _READY
            return False
        if st == _LIVE:
            self._order.remove(t)
        self._erase(t)
        return True

    def _check_erased(self, t):
        b = self._rbuf
        for slot in range(self._slots):
            self._read(t, slot, b)
            if not _erased(b):
                return False
        return True

    # ---- idle time ----------------------------------------------------------------------------

    def maintain(self):
        """One piece of idle-time work; True if it did something. Rolls to the next sector when
        fewer than roll_slack slots remain, erases (or checks) the next sector ahead, releases
        old acknowledged intents."""
        if self._rescan:
            self._scan_tail()
            return True
        t = (self._cur + 1) % self._n if self._cur >= 0 else 0
        free = self._slots - self._next
        slack = self._cfg["roll_slack"]
        if self._cur < 0 or free < slack or (self._ack_held and free <= slack):
            if self._state[t] == _READY:
                self._roll()
                return True
        if self._state[t] != _READY and (self._cur < 0 or self._reusable(t)):
            self._prepare(t)
            self._recount()
            return True
        return self._release(False)

    # ---- reading ------------------------------------------------------------------------------

    def _find(self, seq):
        """(index in _order, slot) of the first record with a sequence number >= seq, or
        (len(_order), 0) when there is none."""
        order = self._order
        lo = 0
        hi = len(order)
        while lo < hi:  # the last sector whose first number is <= seq
            mid = (lo + hi) // 2
            if self._first[order[mid]] <= seq:
                lo = mid + 1
            else:
                hi = mid
        k = lo - 1 if lo > 0 else 0
        b = self._rbuf
        while k < len(order):
            s = order[k]
            c = self._carry[s]
            end = self._next if s == self._cur else self._slots
            # records are numbered consecutively from the header's number, notes and torn
            # slots only push them later: start where it would be without them
            start = 1 + c + (seq - self._first[s] if seq > self._first[s] else 0)
            if start > end:
                start = end
            slot = start
            while slot > 1 + c:  # back over a gap in the numbers (records adopted at migration)
                self._read(s, slot - 1, b)
                if _stored(b) and record.seq_of(b) >= seq:
                    slot -= 1
                elif _stored(b):
                    break
                else:
                    slot -= 1
            while slot < end:
                self._read(s, slot, b)
                if _stored(b) and record.seq_of(b) >= seq:
                    return k, slot
                slot += 1
            k += 1
        return len(order), 0

    def record(self, seq):
        """The stored record with this sequence number as bytes, or None."""
        if seq < 1 or seq > self.last_seq:
            return None
        k, slot = self._find(seq)
        b = self._rbuf
        if k < len(self._order) and record.seq_of(b) == seq:
            if b[0] == _DELTA and not self._rebuild(self._order[k], slot, b):
                return None
            return bytes(b)
        return None

    def records_after(self, seq, limit=32):
        """Up to `limit` stored records numbered above `seq`, oldest first, as bytes."""
        out = []
        if seq >= self.last_seq or limit <= 0:
            return out
        k, slot = self._find(seq + 1)
        b = self._rbuf
        order = self._order
        prev = seq
        while k < len(order) and len(out) < limit:
            s = order[k]
            end = self._next if s == self._cur else self._slots
            top = self._sector_end(k)  # numbers this sector can hold: [first, top)
            while slot < end and len(out) < limit:
                self._read(s, slot, b)
                # strictly increasing and inside the sector's range: a stray copy of a record
                # (damage) is never sent twice
                if _stored(b) and prev < record.seq_of(b) < top:
                    prev = record.seq_of(b)
                    if b[0] != _DELTA or self._rebuild(s, slot, b):
                        out.append(bytes(b))
                slot += 1
            k += 1
            if k < len(order):
                slot = 1 + self._carry[order[k]]
        return out

    # ---- acknowledgement ----------------------------------------------------------------------

    def ack(self, seq):
        """The back office holds every record up to `seq`. AckError for a number not issued or
        below the cursor. Persisted as a note in the current sector (one program, no erase)
        when a slot is spare, else in the next sector's header."""
        if not isinstance(seq, int) or seq > self.last_seq:
            _log.warning("ack %r refused: unknown (last seq %d)", seq, self.last_seq)
            raise AckError("ack of unknown sequence %r" % (seq,))
        if seq < self.acked_seq:
            _log.warning("ack %d refused: below the cursor %d", seq, self.acked_seq)
            raise AckError("ack %d regresses below %d" % (seq, self.acked_seq))
        if seq == self.acked_seq:
            return False
        if self._rescan:
            self._scan_tail()  # a failed program left the next slot unknown: look first
        if self._cur >= 0 and self._slots - self._next > self._cfg["roll_slack"]:
            h = self._hbuf
            h[0] = _NOTE
            h[1] = _NOTE_ACK
            _put32(h, 2, seq)
            _put32(h, _NOTE_CRC, crc32(self._hview[:_NOTE_CRC]))
            slot = self._next
            try:
                self._program(self._cur, slot, self._hview[:_NOTE_LEN])
            except OSError:
                self._rescan = True
                raise
            self._next = slot + 1
        else:
            self._ack_held = True  # maintain() rolls soon: the new header carries it
        self.acked_seq = seq
        self._recount()
        return True

    # ---- the parameter version floor ---------------------------------------------------------

    def note_param_floor(self, key, version):
        """Keep the parameter floor (key id, version) here too (params.py, at an activation or
        at boot, never in a tap). Only raises it. Durable when this returns True: a floor note in
        the current sector (one program), or, with no spare slot, a roll whose header carries
        it; every later header carries it too, so erasing old sectors never loses it."""
        pk, pv = self.param_floor
        if key <= pk and version <= pv:
            return False
        self.param_floor = (key if key > pk else pk, version if version > pv else pv)
        if self._rescan:
            self._scan_tail()
        if self._cur >= 0 and self._slots - self._next > self._cfg["roll_slack"]:
            h = self._hbuf
            h[0] = _NOTE
            h[1] = _NOTE_FLOOR
            _put32(h, 2, self.param_floor[1])
            _put32(h, 6, self.param_floor[0])
            _put32(h, _FN_CRC, crc32(self._hview[:_FN_CRC]))
            slot = self._next
            try:
                self._program(self._cur, slot, self._hview[:_FN_LEN])
            except OSError:
                self._rescan = True
                raise
            self._next = slot + 1
        else:
            self._roll()
        self._recount()
        return True

    # ---- status and maintenance ---------------------------------------------------------------

    def status(self):
        cap = self.capacity
        free = self._free()
        used = cap - free if cap > free else 0
        if self.held:
            state = "held"
        elif not self.can_accept_purchase():
            state = "full"
        elif used * 100 >= cap * self._cfg["warn_pct"]:
            state = "warn"
        else:
            state = "ok"
        return {
            "state": state,
            "last_seq": self.last_seq,
            "acked_seq": self.acked_seq,
            "backlog": self.backlog,
            "used": used,
            "capacity": cap,
            "segments": len(self._order),
            "cut_records": self.cut_records,
            "open_intents": self._open,
            "erases": self.erases,
        }

    def wipe(self):
        """Drop the records (maintenance): the cursor moves to the end, or to just before the
        oldest open intent the back office has not acknowledged (nothing drops an unconfirmed
        debit), and every sector fully acknowledged is erased. Sequence numbers go on."""
        target = self.last_seq
        for i in range(self._open):
            s = record.seq_of(self._pool[i])
            if s > self.acked_seq and s - 1 < target:
                target = s - 1
        if target > self.acked_seq:
            self.ack(target)
        for s in list(self._order[:-1]):
            if self._reusable(s):
                self._prepare(s)
        self._recount()
        _log.warning("log wiped up to seq %d (last %d)", target, self.last_seq)

    def set_floor(self, next_seq, acked=0):
        """Number the next record `next_seq` (migration: the old journal's numbering goes on);
        never lowers the numbering. Opens a sector whose header carries it."""
        if next_seq - 1 <= self.last_seq:
            return False
        self.last_seq = next_seq - 1
        if acked > self.acked_seq:
            self.acked_seq = acked if acked <= self.last_seq else self.last_seq
        self._roll()
        return True

    def close(self):
        pass
