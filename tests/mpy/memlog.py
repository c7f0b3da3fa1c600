# The purchase tests' log: `memlog.make(book)` gives an object with the transaction log's interface
# (CONTRACTS.md: append, open_intents, can_accept_purchase, ...) that also copies every record it
# accepted, decoded, into the list `book` (the tests' view of what was booked). It runs the real
# firmware/txlog.py on a RAM flash device when those exist, else a small in-RAM stand-in.
import record

try:
    import micropython
except ImportError:  # CPython (tests/host): the plain loops below
    micropython = None


class LogFull(Exception):
    pass


class _RamLog:
    """Stand-in: keeps the open intents only; an outcome closes the open intent of the same card
    and ATC, as the log's append does."""

    def __init__(self):
        self.opens = []
        self.last_seq = 0
        self.acked_seq = 0

    def append(self, fields):
        seq = self.last_seq + 1
        r = record.decode(record.encode(fields, seq))
        if r["kind"] == record.DEBIT_INTENT:
            self.opens.append(r)
        elif r["kind"] in record.OUTCOME_KINDS:
            key = (r["card_no"], r["card_atc"])
            self.opens = [o for o in self.opens if (o["card_no"], o["card_atc"]) != key]
        self.last_seq = seq
        return seq

    def can_accept_purchase(self):
        return True

    def open_intents(self):
        return list(self.opens)


# The RAM device's byte loops in machine code (the viper emitter, on both unix ports): a board's
# flash driver is C (esp32.Partition readblocks/writeblocks: esp_partition_read/write, MicroPython
# ports/esp32/esp32_partition.c), so the purchase's instruction count (tools/bench_mpy/tap.py)
# must not charge a bytecode loop per byte of the stand-in to the firmware. No allocation either.
if micropython is not None:

    @micropython.viper
    def _copy_out(dst, src, off: int, n: int):
        d = ptr8(dst)  # noqa: F821 - viper's built-in
        s = ptr8(src)  # noqa: F821
        for i in range(n):
            d[i] = s[off + i]

    @micropython.viper
    def _and_in(dst, off: int, src, n: int):
        d = ptr8(dst)  # noqa: F821
        s = ptr8(src)  # noqa: F821
        for i in range(n):
            d[off + i] = d[off + i] & s[i]

else:

    def _copy_out(dst, src, off, n):
        dst[:n] = src[off : off + n]

    def _and_in(dst, off, src, n):
        for i in range(n):
            dst[off + i] &= src[i]


def _device(blocks):
    """A RAM flash device (boards/unix_sim/rawflash.py) kept in 4 KB pieces, one per sector: the
    purchase tests run in ESP32-sized heaps where one 16 KB piece is often not to be had."""
    import rawflash

    class SectorFlash(rawflash.RawFlash):
        def __init__(self, n):
            rawflash.RawFlash.__init__(self, n, _ram=False)
            # made now, on a fresh heap: made at the first erase it needs 4 KB in one piece
            # (4,097 bytes) in the middle of a run, which a fragmented test heap may not have
            self._ff = b"\xff" * self.block_size
            self.sectors = [bytearray(b"\xff" * self.block_size) for _ in range(n)]

        def _spans(self, addr, n):
            bs = self.block_size
            done = 0
            while done < n:
                s, off = divmod(addr + done, bs)
                k = min(bs - off, n - done)
                yield self.sectors[s], off, done, k
                done += k

        def _load(self, addr, buf):
            bs = self.block_size
            off = addr % bs
            if off + len(buf) <= bs:  # the log's slots never cross a sector: no allocation,
                # as the ESP32's C partition driver
                _copy_out(buf, self.sectors[addr // bs], off, len(buf))
                return
            for sec, off, at, k in self._spans(addr, len(buf)):
                buf[at : at + k] = sec[off : off + k]

        def _and(self, addr, data):
            bs = self.block_size
            off = addr % bs
            if off + len(data) <= bs:
                _and_in(self.sectors[addr // bs], off, data, len(data))
                return
            for sec, off, at, k in self._spans(addr, len(data)):
                for i in range(k):
                    sec[off + i] &= data[at + i]

        def _erase(self, addr):
            # one C copy (a board's erase is the flash chip's): the bench times taps with the
            # log's idle-time erases between them
            self.sectors[addr // self.block_size][:] = self._ff

        def _tear(self, addr, data, length):
            img = bytearray(length)
            self._load(addr, img)
            self.last_tear = rawflash.tear_into(img, 0, data, length, self.tear, self.rng)
            for sec, off, at, k in self._spans(addr, length):
                sec[off : off + k] = img[at : at + k]

    return SectorFlash(blocks)


def _real_log(blocks=4):
    # Small RAM devices: the purchase tests run in ESP32-sized heaps, and none of them writes
    # more than a few hundred records (Booked acknowledges for them).
    try:
        import txlog
    except ImportError:
        return None
    return txlog.TxLog(_device(blocks))


class Booked:
    """Wraps a log: every record it accepted is also decoded into `book` (intents only when
    `intents`: tests about what was sold read the outcomes alone)."""

    def __init__(self, inner, book, intents=True):
        self.inner = inner
        self.book = book
        self.intents = intents
        self.fail_kinds = ()  # appends of these kinds raise OSError (a flash fault)
        self.refuse = False  # the log is full: purchases refused, appends raise LogFull

    def append(self, fields):
        if fields.get("kind") in self.fail_kinds:
            raise OSError(5, "injected flash fault")
        if self.refuse:
            raise LogFull("log full")
        seq = self.inner.append(fields)
        if self.intents or fields.get("kind") != record.DEBIT_INTENT:
            self.book.append(record.decode(record.encode(fields, seq)))
        self._keep_room()
        return seq

    def _keep_room(self):
        # Long test runs on a small device: acknowledge what a back office would have taken
        # (up to the oldest open intent) and let the log erase ahead, as the idle loop does.
        lg = self.inner
        if not hasattr(lg, "ack") or lg.last_seq - lg.acked_seq < 48:
            return
        opens = lg.open_intents()
        upto = opens[0]["seq"] - 1 if opens else lg.last_seq
        if upto > lg.acked_seq:
            lg.ack(upto)
            while lg.maintain():
                pass

    def can_accept_purchase(self):
        return not self.refuse and self.inner.can_accept_purchase()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def ram():
    """The in-RAM stand-in alone (CPython tests of the purchase, which have no flash device)."""
    return _RamLog()


def plain():
    """The log alone (no copy of each record): for figures of the purchase itself."""
    return _real_log(16) or _RamLog()


def make(book=None, inner=None, intents=True, real=True):
    """real=False: the stand-in even where the log exists (tests of a reader or link whose heap
    has no room for a RAM flash device; the log's own behaviour is tested elsewhere)."""
    if inner is None:
        inner = (_real_log() if real else None) or _RamLog()
    return Booked(inner, [] if book is None else book, intents)
